"""The default demo set: real colour photographs among Tux Paint's stamps (Debian `tuxpaint-stamps-default`).

Tux Paint files its stamps in folders such as `animals/birds`; some are drawings. The lists below keep only
stamps checked by eye to be photographs, and regroup them into basic-level categories whose labels are
correct (e.g. the slug and the woodlouse are invertebrates, not insects; rabbits are not rodents).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from PIL import Image

from study.image_sources.base import ImageSourceUnavailable, SourceImage, fit_on_square

DEFAULT_STAMPS_DIR = Path("/usr/share/tuxpaint/stamps")
INSTALL_STEP = "apt-get install --no-install-recommends tuxpaint-stamps-default"
LICENCE = "GPL-2.0-or-later"
SOURCE_LABEL = "Tux Paint stamps (Debian package tuxpaint-stamps-default)"


def _stamps(folder: str, names: str) -> tuple[str, ...]:
    return tuple(f"{folder}/{name}" for name in names.split())


# (superordinate, category) -> stamp paths relative to the stamps folder, without ".png".
PHOTO_STAMPS: dict[tuple[str, str], tuple[str, ...]] = {
    ("animal", "bird"): _stamps(
        "animals/birds",
        "adelaide-rosella albino_peahen blackbird chicken_profile crow crowned_crane cuckoo drake duck "
        "gander guineafowl helmeted_guineafowl hen heron_greatblue heron_greatblue_flying lark "
        "little-penguin magellanic_penguin magpie nandou ostrich owl peacock pelican penguin pigeon "
        "pink_flamingo quetzal rainbow-lorikeet rooster seagull silver-gull tucan turkey vulture",
    ),
    ("animal", "fish"): _stamps(
        "animals/fish",
        "bluegroper butterflyfish clownfish coraltrout dolphinfish lionfish moonwrasse seahorse stripedfish",
    ),
    ("animal", "invertebrate"): _stamps(
        "animals/insects", "Brown_slug Woodlouse grasshopper hornet hoverfly mantis xanthia"
    )
    + _stamps("animals/fish", "lobster shrimp")
    + _stamps("animals/shellfish", "abalone murray-mussel"),
    ("animal", "hoofed_mammal"): _stamps(
        "animals/mammals/bovines",
        "bison bull cow cow_white gnu-baby-stand gnu-baby gnu-sitting gnu-stand goat indian_blackbuck "
        "mountaingoat ram sheep sheep_lamb yak zebu",
    )
    + _stamps("animals/mammals/deer", "caribou deer doe wapiti")
    + _stamps("animals/mammals/equines", "donkey donkey_eating horse zebra")
    + _stamps("animals/mammals/camel", "camel dromedary")
    + _stamps("animals/mammals", "giraffe hippopotamus pig pig_golden pig_golden2 rhino_black wildboar"),
    ("animal", "carnivore"): _stamps("animals/mammals/cats", "lion-2 lion tiger tiger_sumatran")
    + _stamps("animals/mammals/dogs", "dingo dog fox")
    + _stamps("animals/mammals/bears", "bear european-bear")
    + _stamps("animals/mammals", "badger ferret")
    + _stamps("animals/mammals/aquatic", "otter sea_lion"),
    ("plant", "flower"): _stamps(
        "plants/flowers",
        "adeenia anemone_red anthoorium bolsom chemparathi daffodil flower1 flower10 flower2 flower3 flower4 "
        "flower5 flower6 flower7 flower8 flower9 iris marigold pigface red-gazania rose whitestar-petunia "
        "yellow-flower",
    ),
    ("plant", "tree"): _stamps("plants/trees", "birch holm_oak liberia-palm tree336"),
    ("food", "fruit"): _stamps(
        "food/fruit",
        "Apricot_whole Cherry_Stella Strawberry2 apple_fuji apple_granny_smith apple_green apple_red "
        "apple_sierra_beauty apricot avocado banana cherimoya grapes kiwi lemon mandarine mango orange "
        "orange_seville pear pineapple pomegranate raspberry sliced_lime sliced_orange strawberry",
    ),
    ("food", "vegetable"): _stamps(
        "food/vegetables",
        "broccoli carrot chilepepper corn eggplant garlic garlics lettuce mushroom onion pattypan_squash "
        "pepper potato pumpkin_small redlettuce tomato yam yellowpepper",
    ),
    ("artefact", "tool"): _stamps(
        "household/tools",
        "hammer mallet_metal measuring_tape paintbrush_large plyers saw spade wrench wrench_adjustable "
        "wrench_plumbers",
    ),
    ("artefact", "musical_instrument"): _stamps(
        "hobbies/music/string", "cello guitar2 guitar_classical guitar_electric guitar_electric_bass violin"
    )
    + _stamps("hobbies/music/brass", "trumpet")
    + _stamps("hobbies/music/wind", "bassoon")
    + _stamps("hobbies/music/percussion", "cymbal_crash drum_tomtom_floor drumkit"),
    ("artefact", "vehicle"): _stamps("vehicles", "garbagetruck")
    + _stamps("vehicles/race", "indycar")
    + _stamps("vehicles/emergency", "firetruck")
    + _stamps("vehicles/construction", "dumper")
    + _stamps("vehicles/flight", "balloon360")
    + _stamps("vehicles/flight/planes", "747")
    + _stamps("vehicles/auto", "beetle sedan sportscar2 truck")
    + _stamps("vehicles/masstransit", "green_korean_bus")
    + _stamps("vehicles/cycle", "pink_tricycle")
    + _stamps("military/vehicles", "bradley infantry-stryker"),
}


def _write_stamp(png: Path, size: int, destination: Path) -> None:
    with Image.open(png) as stamp:
        fit_on_square(stamp, size).save(destination)


def _description(png: Path) -> str:
    """Tux Paint's English caption: the first line of the stamp's .txt file."""
    text = png.with_suffix(".txt")
    return text.read_text(encoding="utf-8", errors="replace").splitlines()[0].strip() if text.exists() else ""


class TuxPaintPhotos:
    """Photo stamps flattened onto white squares of `image_size` pixels (PNG)."""

    name = "tuxpaint-photos"

    def __init__(self, stamps_dir: Path = DEFAULT_STAMPS_DIR, image_size: int = 160) -> None:
        self.stamps_dir = Path(stamps_dir)
        self.image_size = image_size

    def list_images(self) -> list[SourceImage]:
        if not self.stamps_dir.is_dir():
            raise ImageSourceUnavailable(
                f"Tux Paint stamps not found at {self.stamps_dir}; install them with `{INSTALL_STEP}` "
                "(or choose another image source, e.g. fashion-mnist or folder:PATH)."
            )
        images = []
        for (superordinate, category), stamps in PHOTO_STAMPS.items():
            for stamp in stamps:
                png = self.stamps_dir / f"{stamp}.png"
                if png.is_file():  # a later package version may drop a stamp; the rest still make a set
                    images.append(self._image(superordinate, category, stamp, png))
        return images

    def _image(self, superordinate: str, category: str, stamp: str, png: Path) -> SourceImage:
        return SourceImage(
            superordinate=superordinate,
            category=category,
            stem=Path(stamp).name.lower(),
            suffix=".png",
            write=partial(_write_stamp, png, self.image_size),
            source=SOURCE_LABEL,
            licence=LICENCE,
            attributes={"origin": f"{stamp}.png", "description": _description(png)},
        )
