"""``check_checkpoint``: a checkpoint whose pickle would call anything but layer and tensor builders is refused,
without running it."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import pytest

from tests.conftest import FIXTURES
from yolo_task_manager.errors import InvalidInput
from yolo_task_manager.pickles import check_checkpoint


class _Payload:
    """Unpickling this runs a shell command: what a crafted checkpoint would do on the worker."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def _checkpoint(path: Path, payload: object, protocol: int = 2) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"epoch": -1, "model": payload}, protocol=protocol))
    return path


def test_a_real_checkpoint_passes_and_the_same_one_calling_os_system_is_refused(tmp_path: Path) -> None:
    # Given: a classifier another ultralytics install made, and a copy whose pickle names posix.system
    # in place of collections.OrderedDict (protocol 2 names each global as "c<module>\n<name>\n")
    real = FIXTURES / "weights" / "third_party" / "yolo11n-cls_mnist160_babymelvin.pt"
    with zipfile.ZipFile(real) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    pickle_name = next(name for name in entries if name.endswith("data.pkl"))
    assert b"ccollections\nOrderedDict\n" in entries[pickle_name]
    entries[pickle_name] = entries[pickle_name].replace(b"ccollections\nOrderedDict\n", b"cposix\nsystem\n", 1)
    tampered = tmp_path / "tampered.pt"
    with zipfile.ZipFile(tampered, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)

    # When / Then: the original is accepted (no error), the tampered copy refused by name
    assert check_checkpoint(real) is None
    with pytest.raises(InvalidInput, match=r"tampered\.pt refers to posix\.system"):
        check_checkpoint(tampered)


@pytest.mark.parametrize("protocol", [2, 4])
def test_a_checkpoint_that_would_run_a_command_is_refused_without_running_it(protocol: int, tmp_path: Path) -> None:
    # Given: a .pt whose pickle calls os.system (GLOBAL in protocol 2, STACK_GLOBAL in 4)
    marker = tmp_path / "pwned"
    evil = _checkpoint(tmp_path / "evil.pt", _Payload(marker), protocol)

    # When / Then: refused, naming the call, and the command never ran
    with pytest.raises(InvalidInput, match=r"refers to posix\.system, which an ultralytics checkpoint never needs"):
        check_checkpoint(evil, trusted_dir=tmp_path / "pretrained")
    assert not marker.exists()


def test_the_message_says_where_an_operator_can_put_a_file_they_trust(tmp_path: Path) -> None:
    evil = _checkpoint(tmp_path / "evil.pt", _Payload(tmp_path / "pwned"))
    with pytest.raises(InvalidInput, match=f"copy it into {tmp_path / 'pretrained'}/"):
        check_checkpoint(evil, trusted_dir=tmp_path / "pretrained")


def test_a_legacy_yolov5_checkpoint_names_its_foreign_class() -> None:
    with pytest.raises(InvalidInput, match=r"refers to models\.yolo\.Model"):
        check_checkpoint(FIXTURES / "weights" / "yolov5n.pt")


def test_a_file_that_is_not_a_checkpoint_or_holds_a_broken_pickle_is_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("not a zip")
    broken = tmp_path / "broken.pt"
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00(")
    with pytest.raises(InvalidInput, match="is not a PyTorch checkpoint"):
        check_checkpoint(text)
    with pytest.raises(InvalidInput, match="is not a readable checkpoint"):
        check_checkpoint(broken)
