// Device check, mounted before consent only when the study restricts devices or window size: reports the
// pointer, screen and window size (again after every resize), and Python decides (study/devices.py).
export default function (component) {
  const { setStateValue } = component;
  const report = () => setStateValue("facts", {
    coarse_pointer: window.matchMedia ? window.matchMedia("(pointer: coarse)").matches : null,
    screen_width: screen.width, screen_height: screen.height,
    window_width: window.innerWidth, window_height: window.innerHeight,
    user_agent: navigator.userAgent,
  });
  let timer = null;
  const onResize = () => { clearTimeout(timer); timer = setTimeout(report, 300); };
  window.addEventListener("resize", onResize);
  report();
  return () => { clearTimeout(timer); window.removeEventListener("resize", onResize); };
}
