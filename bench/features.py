"""Feature extraction throughput: ``extract_features`` vs the bare backbone forward, same run.

Images: JPEG crops (ImageNet-like sizes) of the photos bundled with scikit-image and scikit-learn, written
to a temporary folder. "Bare" = the backbone's forward pass on tensors decoded and preprocessed
beforehand (no file reading, hashing, decoding or caching), in the same batch size and memory format.
Ours = ``extract_features`` on the files with a cold cache (hash, decode in DataLoader workers, forward,
write the cache), then again with a warm cache. Bare and ours alternate so machine load hits both.

    python -m bench.features [--images 128] [--backbone timm:tf_efficientnet_lite0] [--repeats 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from alignment import DEFAULT_BACKBONE
from alignment.backbones import create_backbone
from alignment.features import default_num_workers, extract_features


def write_photo_crops(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` distinct JPEG crops (about 500 x 375) of the bundled real photos."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    photos = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket(), *load_sample_images().images]
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        photo = Image.fromarray(photos[i % len(photos)])
        w, h = photo.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        left, top = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        crop = photo.crop((left, top, left + cw, top + ch)).resize((500, 375), Image.BICUBIC)
        paths.append(folder / f"photo_{i:04d}.jpg")
        crop.save(paths[-1], quality=90)
    return paths


def bare_forward_seconds(
    module: torch.nn.Module, tensors: torch.Tensor, batch_size: int, channels_last: bool
) -> float:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    module = module.to(memory_format=fmt)
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in tensors.split(batch_size):
            module(batch.contiguous(memory_format=fmt))
    return time.perf_counter() - start


def run(n_images: int, backbone_name: str, batch_size: int, num_workers: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "images").mkdir()
        paths = write_photo_crops(tmp / "images", n_images)
        backbone = create_backbone(backbone_name, cache_dir=tmp / "weights")
        tensors = torch.stack([backbone.preprocess(Image.open(p).convert("RGB")) for p in paths])
        bare_forward_seconds(backbone.module, tensors[:batch_size], batch_size, True)  # warm-up
        timings: dict[str, list[float]] = {"bare": [], "bare_plain": [], "ours": [], "hit": []}
        for repeat in range(repeats):
            timings["bare"].append(bare_forward_seconds(backbone.module, tensors, batch_size, True))
            cache = tmp / f"cache{repeat}"
            start = time.perf_counter()
            extract_features(backbone, paths, cache_dir=cache, batch_size=batch_size, num_workers=num_workers)
            timings["ours"].append(time.perf_counter() - start)
            start = time.perf_counter()
            extract_features(backbone, paths, cache_dir=cache, batch_size=batch_size, num_workers=num_workers)
            timings["hit"].append(time.perf_counter() - start)
            timings["bare_plain"].append(bare_forward_seconds(backbone.module, tensors, batch_size, False))
    _print_table(timings, n_images, backbone_name, batch_size, num_workers)


def _print_table(
    timings: dict[str, list[float]], n: int, backbone: str, batch_size: int, workers: int
) -> None:
    rate = {key: n / np.mean(values) for key, values in timings.items()}
    print(
        f"{backbone}, {n} JPEG images (500x375), batch {batch_size}, {workers} decode worker(s), "
        f"{torch.get_num_threads()} torch threads; mean of {len(timings['ours'])} alternating runs\n"
    )
    rows = [
        ("bare forward, pre-decoded, channels-last", rate["bare"], ""),
        ("bare forward, pre-decoded, contiguous", rate["bare_plain"], ""),
        ("extract_features, cold cache", rate["ours"], f"{100 * rate['ours'] / rate['bare']:.0f}% of bare"),
        ("extract_features, warm cache (all hits)", rate["hit"], f"{rate['hit'] / rate['bare']:.0f}x bare"),
    ]
    print(f"{'pipeline':<42} {'images/s':>10}  note")
    print("-" * 68)
    for name, value, note in rows:
        print(f"{name:<42} {value:>10.1f}  {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=default_num_workers())
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    run(args.images, args.backbone, args.batch_size, args.workers, args.repeats)


if __name__ == "__main__":
    main()
