"""MNIST as six tensors on the training device, and batches sliced from seeded permutations.

    data = load_mnist(data_dir(None), val_size=5000, device=torch.device("cpu"))
    sampler = BatchSampler(seeds=[1, 2], n_examples=len(data.train_y), batch_size=60)
    x, y = get_batch(data.train_x, data.train_y, sampler.indices(iteration=0))   # x: (2, 60, 784)

No DataLoader: the whole dataset is one tensor (about 200 MB as float32), and each network's
batches are consecutive slices of its own permutation of the training set, redrawn every epoch.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.datasets import MNIST

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # the standard statistics of MNIST's training images
SPLIT_SEED = 20190306  # fixes which training images form the validation set, in every run
# The official MNIST files (uncompressed IDX) and their sizes in bytes: a 16-byte header and 28 x 28 bytes an image,
# an 8-byte header and 1 byte a label. A file of another size is damaged: named in the error, not called missing.
MNIST_FILES = {
    "train-images-idx3-ubyte": 16 + 60_000 * 784,
    "train-labels-idx1-ubyte": 8 + 60_000,
    "t10k-images-idx3-ubyte": 16 + 10_000 * 784,
    "t10k-labels-idx1-ubyte": 8 + 10_000,
}


class DataError(RuntimeError):
    """MNIST could not be found, read or downloaded; the message is one line naming the file and the remedy."""


@dataclass
class MNISTSplits:
    train_x: torch.Tensor  # (n_train, 784) float32, normalized
    train_y: torch.Tensor  # (n_train,) int64
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The data folder: the argument, else $LTH_DATA_DIR, else ./data."""
    return Path(explicit or os.environ.get("LTH_DATA_DIR") or "data")


IDX_MAGIC = {"images": 2051, "labels": 2049}  # the first four bytes of an IDX file: unsigned bytes, 3 or 1 dimensions


def _read_split(root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    raw = root / "MNIST" / "raw"
    _fetch_if_absent(root, raw)
    prefix = "train" if train else "t10k"
    images = _read_idx(raw / f"{prefix}-images-idx3-ubyte").reshape(-1, 28 * 28).float()
    labels = _read_idx(raw / f"{prefix}-labels-idx1-ubyte").long()
    if int(labels.max()) > 9:
        raise DataError(_damaged(raw, f"{prefix}-labels-idx1-ubyte holds a label above 9"))
    return (images / 255 - MNIST_MEAN) / MNIST_STD, labels


def _fetch_if_absent(root: Path, raw: Path) -> None:
    """Download the four files when none is there; name the missing ones when only some are. A failed download
    leaves the data folder as it was: the files are fetched into a temporary folder and moved in once all are there."""
    kinds = {name: _kind(raw / name) for name in MNIST_FILES}
    folders = [name for name, kind in kinds.items() if kind == "folder"]
    if folders:
        raise DataError(
            f"{raw / folders[0]} is a folder, not the MNIST file of that name; put the official file there instead"
        )
    present = [name for name, kind in kinds.items() if kind == "file"]
    missing = [name for name in MNIST_FILES if name not in present]
    if not missing:
        return
    too_deep = next(
        (folder for folder in (root, root / "raw") if all(_kind(folder / n) == "file" for n in MNIST_FILES)), None
    )
    if not present and too_deep:  # --data-dir names MNIST/raw or MNIST itself: a download would fetch a second copy
        raise DataError(
            f"the MNIST files are in {too_deep}, but the data folder is the one that holds MNIST/raw: point --data-dir "
            f"/ $LTH_DATA_DIR at {too_deep.parent.parent}"
        )
    if present:  # a download would fetch every file again: say which are missing instead
        raise DataError(
            f"MNIST in {raw} is incomplete: {', '.join(missing)} missing ({', '.join(present)} there). "
            f"Put the missing official files there, or delete the others to download all four again."
        )
    with tempfile.TemporaryDirectory(prefix="mnist-") as fetched:
        try:
            MNIST(root=fetched, train=True, download=True)
            raw.mkdir(parents=True, exist_ok=True)
            for name in MNIST_FILES:  # each whole or absent: moved beside its place, then renamed into it
                shutil.move(Path(fetched) / "MNIST" / "raw" / name, raw / f"{name}.part")
                os.replace(raw / f"{name}.part", raw / name)
        except Exception as error:  # no network, a proxy, a read-only folder: each gets its message
            reason = " ".join(f"{type(error).__name__}: {error}".split()).rstrip(":")  # torchvision's span lines
            raise DataError(
                f"MNIST is not in {raw} and could not be downloaded ({reason}). Put {OFFICIAL} in {raw}, "
                f"or point --data-dir / $LTH_DATA_DIR at the folder that holds MNIST/raw."
            ) from None


def _kind(path: Path) -> str | None:
    """ "file", "folder", or None where nothing is; a folder that cannot be entered is a DataError naming it."""
    try:
        return "folder" if path.is_dir() else "file" if path.exists() else None
    except OSError as error:
        raise DataError(
            f"MNIST in {path.parent} cannot be read ({error.strerror or error}); give yourself read access to "
            f"{error.filename or path.parent}, or point --data-dir / $LTH_DATA_DIR at another copy."
        ) from None


def _read_idx(file: Path) -> torch.Tensor:
    """An MNIST file (IDX: a magic number, the dimensions, then unsigned bytes), checked against the official one."""
    try:
        data = file.read_bytes()
    except OSError as error:
        raise DataError(f"MNIST file {file} could not be read ({error.strerror or error})") from None
    name, kind = file.name, "images" if "images" in file.name else "labels"
    if len(data) != MNIST_FILES[name]:
        problem = f"{name} is {len(data):,} bytes, not {MNIST_FILES[name]:,} (an interrupted copy or another file)"
        raise DataError(_damaged(file.parent, problem))
    n_dims = 3 if kind == "images" else 1
    header = [int.from_bytes(data[i : i + 4], "big") for i in range(0, 4 * (1 + n_dims), 4)]
    if header[0] != IDX_MAGIC[kind]:
        raise DataError(
            _damaged(file.parent, f"{name} starts with {header[0]}, not the magic number {IDX_MAGIC[kind]}")
        )
    shape = [(len(data) - 4 * (1 + n_dims)) // (28 * 28 if kind == "images" else 1), *([28, 28] if n_dims == 3 else [])]
    if header[1:] != shape:
        raise DataError(_damaged(file.parent, f"{name} declares {header[1:]} {kind}, not {shape}"))
    return torch.frombuffer(bytearray(data[4 * (1 + n_dims) :]), dtype=torch.uint8).reshape(header[1], *header[2:])


OFFICIAL = f"the four official files {', '.join(MNIST_FILES)} (uncompressed IDX, as from yann.lecun.com)"


def _damaged(raw: Path, problem: str) -> str:
    return (
        f"MNIST in {raw} is damaged: {problem}. Replace it with the official file, or delete it and the others "
        f"to download all four again."
    )


def load_mnist(root: Path, val_size: int, device: torch.device) -> MNISTSplits:
    """Read MNIST once, normalize it, hold out `val_size` training images, move everything to `device`."""
    train_x, train_y = _read_split(root, train=True)
    test_x, test_y = _read_split(root, train=False)
    order = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(SPLIT_SEED))
    val, train = order[:val_size], order[val_size:]
    tensors = (train_x[train], train_y[train], train_x[val], train_y[val], test_x, test_y)
    return MNISTSplits(*(t.to(device) for t in tensors))


class BatchSampler:
    """Per-network batch indices: network i walks through its own seeded permutation, epoch after epoch.

    The last incomplete batch of an epoch is dropped, so every batch has `batch_size` examples.
    Networks given the same seed see the same batches, in the same order.
    """

    def __init__(self, seeds: list[int], n_examples: int, batch_size: int, device: torch.device | str = "cpu"):
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.n_examples, self.batch_size, self.device = n_examples, batch_size, torch.device(device)
        self.steps_per_epoch = n_examples // batch_size
        self._epoch, self._permutations = -1, torch.empty(0)

    def indices(self, iteration: int) -> torch.Tensor:
        """(n_networks, batch_size) example indices for `iteration`; iterations must be asked for in order, and may
        start anywhere: the batches of iteration k are the same whether or not iterations 0 to k-1 were asked for."""
        epoch, step = divmod(iteration, self.steps_per_epoch)
        if epoch < self._epoch:
            raise ValueError(f"BatchSampler walks forward only (asked for epoch {epoch} after epoch {self._epoch})")
        if epoch != self._epoch:
            for _ in range(self._epoch + 1, epoch):  # epochs skipped (training from iteration k): drawn, not used
                for g in self.generators:
                    torch.randperm(self.n_examples, generator=g)
            perms = torch.stack([torch.randperm(self.n_examples, generator=g) for g in self.generators])
            if self.device.type == "cuda":  # pinned: the copy is asynchronous, the host does not wait for the GPU
                perms = perms.pin_memory()
            self._epoch, self._permutations = epoch, perms.to(self.device, non_blocking=True)
        return self._permutations[:, step * self.batch_size : (step + 1) * self.batch_size]


def get_batch(x: torch.Tensor, y: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather a batch for every network: indices (n, b) -> inputs (n, b, features), labels (n, b).

    index_select on the flattened indices, which gathers whole rows, rather than advanced indexing x[indices].
    """
    flat = indices.reshape(-1)
    return x.index_select(0, flat).view(*indices.shape, -1), y.index_select(0, flat).view(indices.shape)
