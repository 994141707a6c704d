"""The TFLite converter's own environment: made under LLMEDGE_HOME on first use, found after,
never left half made. A local wheel stands in for litert-torch (no network, seconds)."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from llmedge.errors import ConversionError
from vision.litert_env import OVERRIDE, env_python, litert_python


def probe_wheel(folder: Path) -> Path:
    """A one-module wheel, `litert_probe`, that pip installs without an index."""
    wheel = folder / "litert_probe-1.0-py3-none-any.whl"
    info = "litert_probe-1.0.dist-info"
    files = {
        "litert_probe/__init__.py": "READY = 'yes'\n",
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: litert-probe\nVersion: 1.0\n",
        f"{info}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in {**files, f"{info}/RECORD": record}.items():
            archive.writestr(name, text)
    return wheel


def test_the_environment_is_made_once_and_then_found(
    tmp_path: Path, llmedge_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    wheel = (str(probe_wheel(tmp_path)),)
    notes: list[str] = []
    python = litert_python(llmedge_home, notes.append, wheel)
    assert python == env_python(llmedge_home / "envs" / "litert") and python.is_file()
    assert "making the TFLite converter's environment" in notes[0] and "ready" in notes[-1]
    assert any("Successfully installed litert-probe-1.0" in n for n in notes)
    done = subprocess.run([str(python), "-c", "import litert_probe; print(litert_probe.READY)"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.stdout.strip() == "yes"
    assert sorted(p.name for p in (llmedge_home / "envs").iterdir()) == [
        "litert",
        "litert-install.log",
    ]

    again: list[str] = []
    assert litert_python(llmedge_home, again.append, wheel) == python and again == []
    monkeypatch.setenv(OVERRIDE, "/opt/elsewhere/bin/python")
    assert litert_python(llmedge_home, again.append, wheel) == Path("/opt/elsewhere/bin/python")


def test_a_failed_install_leaves_nothing_half_made(
    tmp_path: Path, llmedge_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    with pytest.raises(ConversionError, match=r"failed \(exit 1\).*litert-install\.log"):
        litert_python(
            llmedge_home, lambda _: None, (str(tmp_path / "missing-1.0-py3-none-any.whl"),)
        )
    assert [p.name for p in (llmedge_home / "envs").iterdir()] == ["litert-install.log"]
