"""`fnst_coco_images`: a TensorFlow-free TFDS builder for the COCO images (no annotations).

TFDS's official `coco` builder imports TensorFlow to prepare the data. Style transfer only needs
the pictures, so this builder copies the JPEG bytes of each image, unchanged, out of the official
zips into ArrayRecord files, which `tfds.data_source` then reads without TensorFlow.

Configs: `fnst_coco_images/2014` (train 82,783 / validation 40,504 images, what Johnson et al.
trained on) and `fnst_coco_images/2017`. The zips are downloaded by TFDS's download manager, or
taken from `manual_dir` when it holds `train2014.zip` and `val2014.zip` (or the extracted
`train2014/` and `val2014/` folders). Prepare once, with a progress bar:

    python -m fnst_jax.data.coco_builder --data_dir=~/tensorflow_datasets \
        --manual_dir=/path/to/coco_zips --config=2014

Defining this class registers the builder with TFDS (importing `fnst_jax.data` is enough).
"""

from __future__ import annotations

import dataclasses
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import tensorflow_datasets as tfds
from etils import epath

_COCO_URL = "http://images.cocodataset.org/zips/{}.zip"
_CITATION = """\
@inproceedings{lin2014microsoft,
  title={Microsoft COCO: Common Objects in Context},
  author={Lin, Tsung-Yi and Maire, Michael and Belongie, Serge and Hays, James and
          Perona, Pietro and Ramanan, Deva and Doll{\\'a}r, Piotr and Zitnick, C. Lawrence},
  booktitle={ECCV},
  year={2014}
}"""


@dataclasses.dataclass
class CocoImagesConfig(tfds.core.BuilderConfig):
    """Which COCO release; `folders` maps TFDS split -> COCO folder (and zip) name."""

    folders: dict[str, str] = dataclasses.field(default_factory=dict)


class FnstCocoImages(tfds.core.GeneratorBasedBuilder):
    """COCO images only, as encoded JPEG bytes plus the file name."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Images of the COCO train/val zips, bytes unchanged."}
    BUILDER_CONFIGS = [
        CocoImagesConfig(
            name="2014",
            description="COCO 2014 images (Johnson et al. 2016 trained on train2014).",
            folders={"train": "train2014", "validation": "val2014"},
        ),
        CocoImagesConfig(
            name="2017",
            description="COCO 2017 images.",
            folders={"train": "train2017", "validation": "val2017"},
        ),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Optional. Put the COCO image zips (e.g. train2014.zip and val2014.zip from
    https://cocodataset.org/#download) or their extracted folders (train2014/, val2014/) in
    manual_dir. Without them the zips are downloaded.
    """

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS derives this for builders outside its tree through `importlib_resources`, which
        # is not installed; the checksums file it locates from here is optional anyway.
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        # Built directly: tfds.core.dataset_info_from_configs only works for builders that live
        # in TFDS's own source tree.
        return tfds.core.DatasetInfo(
            builder=self,
            description="Images of Microsoft COCO without annotations, for style transfer.",
            features=tfds.features.FeaturesDict(
                {
                    # Stored as the original bytes; a few COCO images are greyscale JPEGs.
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                    "image/filename": tfds.features.Text(),
                }
            ),
            homepage="https://cocodataset.org",
            citation=_CITATION,
        )

    def _manual_path(self, dl_manager: tfds.download.DownloadManager, folder: str) -> Path | None:
        try:
            manual_dir = Path(dl_manager.manual_dir)
        except AssertionError:  # no manual_dir given, or it is empty
            return None
        for candidate in (manual_dir / f"{folder}.zip", manual_dir / folder):
            if candidate.exists():
                return candidate
        return None

    def _split_generators(
        self, dl_manager: tfds.download.DownloadManager
    ) -> dict[str, Iterator[tuple[str, dict[str, bytes | str]]]]:
        folders = self.builder_config.folders
        paths = {split: self._manual_path(dl_manager, folder) for split, folder in folders.items()}
        missing = {
            split: _COCO_URL.format(folder)
            for split, folder in folders.items()
            if paths[split] is None
        }
        if missing:
            paths.update(
                {split: Path(path) for split, path in dl_manager.download(missing).items()}
            )
        return {
            split: self._generate_examples(paths[split], folder)
            for split, folder in folders.items()
        }

    def _generate_examples(
        self, path: Path, folder: str
    ) -> Iterator[tuple[str, dict[str, bytes | str]]]:
        """Yields (file name, example) for every .jpg in a COCO zip or extracted folder."""
        path = Path(path)
        if path.is_dir():
            for image_path in sorted(path.rglob("*")):
                if image_path.suffix.lower() in (".jpg", ".jpeg") and image_path.is_file():
                    yield (
                        image_path.name,
                        {
                            "image": image_path.read_bytes(),
                            "image/filename": image_path.name,
                        },
                    )
            return
        # The zip is read in place: extracting train2014.zip would need another 13 GB.
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                name = info.filename
                if info.is_dir() or not name.lower().endswith((".jpg", ".jpeg")):
                    continue
                if f"{folder}/" not in f"/{name}":
                    continue
                file_name = name.rsplit("/", 1)[-1]
                yield file_name, {"image": archive.read(info), "image/filename": file_name}


def prepare(
    config: str = "2014",
    *,
    data_dir: str | None = None,
    manual_dir: str | None = None,
) -> tfds.core.DatasetBuilder:
    """Downloads (unless in `manual_dir`) and writes `fnst_coco_images/<config>` as ArrayRecord."""
    builder = FnstCocoImages(config=config, data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
    )
    return builder


def main(argv: Sequence[str]) -> None:
    del argv
    builder = prepare(_CONFIG.value, data_dir=_DATA_DIR.value, manual_dir=_MANUAL_DIR.value)
    print(f"Prepared {builder.info.full_name} in {builder.data_dir}:")
    for split, info in builder.info.splits.items():
        print(f"  {split}: {info.num_examples} images")


if __name__ == "__main__":
    from absl import app, flags

    _CONFIG = flags.DEFINE_enum("config", "2014", ["2014", "2017"], "COCO release.")
    _DATA_DIR = flags.DEFINE_string(
        "data_dir", None, "TFDS data dir (default ~/tensorflow_datasets)."
    )
    _MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Folder holding the COCO zips.")
    app.run(main)
