"""The class map: a model's classes as the dataset's COCO category ids and names, in order.

A network predicts contiguous indices ``0..K-1``; ``ClassMap`` maps them to the dataset's category
ids and back, is stored in every checkpoint the workbench writes, and compares itself with a
dataset's classes so that a mismatch is a loud ``ClassMismatchError`` instead of a silent AP 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import ClassMismatchError

if TYPE_CHECKING:  # pragma: no cover
    from ..data.dataset import Dataset

COCO_CATEGORY_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
COCO_NAMES = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
]


@dataclass
class ClassMap:
    category_ids: list[int]
    names: list[str]

    def __post_init__(self) -> None:
        self.category_ids = [int(i) for i in self.category_ids]
        self.names = [str(n) for n in self.names]
        if len(self.category_ids) != len(self.names):
            raise ValueError(f"{len(self.category_ids)} category ids but {len(self.names)} class names")

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def from_dataset(cls, ds: Dataset) -> ClassMap:
        return cls([c.id for c in ds.categories], [c.name for c in ds.categories])

    @classmethod
    def from_meta(cls, meta: dict) -> ClassMap:
        return cls(meta["category_ids"], meta["class_names"])

    @classmethod
    def from_names(cls, names: list[str], category_ids: list[int] | None = None) -> ClassMap:
        return cls(list(category_ids) if category_ids is not None else list(range(1, len(names) + 1)), names)

    @classmethod
    def default(cls, n: int) -> ClassMap:
        """``n`` unnamed classes ``class_1..class_n``; 80 classes are taken to be COCO's."""
        if n == len(COCO_NAMES):
            return cls(list(COCO_CATEGORY_IDS), list(COCO_NAMES))
        return cls(list(range(1, n + 1)), [f"class_{i}" for i in range(1, n + 1)])

    def to_meta(self) -> dict:
        return {"category_ids": list(self.category_ids), "class_names": list(self.names)}

    def to_list(self) -> list[dict]:
        return [{"id": i, "name": n} for i, n in zip(self.category_ids, self.names)]

    def to_contiguous(self) -> dict[int, int]:
        return {cid: i for i, cid in enumerate(self.category_ids)}

    def describe(self) -> str:
        return ", ".join(f"{i}:{n}" for i, n in zip(self.category_ids, self.names))

    def same(self, other: ClassMap) -> bool:
        return list(zip(self.category_ids, self.names)) == list(zip(other.category_ids, other.names))

    def check_same(self, other: ClassMap, what: str, other_what: str) -> None:
        if not self.same(other):
            raise ClassMismatchError(
                f"class mismatch: {what} has classes [{self.describe()}] but {other_what} has "
                f"[{other.describe()}] (id:name). Use weights trained on these classes, or fine-tune with "
                "ignore_class_mismatch=True to re-initialise the class-specific layers."
            )
