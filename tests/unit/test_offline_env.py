"""Workers run ultralytics with every offline switch on."""

from __future__ import annotations

from pathlib import Path

from yolo_task_manager.workers.offline import offline_env


def test_training_children_get_every_offline_switch_and_the_fonts(tmp_path: Path):
    env = offline_env({"ULTRALYTICS_API_KEY": "secret", "PATH": "/bin"}, tmp_path)
    assert env["YOLO_OFFLINE"] == "1" and env["YOLO_AUTOINSTALL"] == "0"
    assert "ULTRALYTICS_API_KEY" not in env and env["PATH"] == "/bin"
    for var in ("YOLO_CONFIG_DIR", "MPLCONFIGDIR", "TORCHINDUCTOR_CACHE_DIR", "XDG_CACHE_HOME"):
        assert env[var].startswith(str(tmp_path))
    fonts = Path(env["YOLO_CONFIG_DIR"]) / "Ultralytics"
    assert (fonts / "Arial.ttf").stat().st_size > 100_000 and (fonts / "Arial.Unicode.ttf").is_file()
