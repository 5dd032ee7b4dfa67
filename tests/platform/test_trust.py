"""Signing a sweep's Tune state and refusing to resume one this user did not sign, on fake Tune
folders (no Ray), and ``esper sweep --resume`` refusing an unsigned sweep before Ray starts."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from esper.conf import ConfigError, compose
from esper.config import to_plain
from esper.platform.trust import (
    SECRET_ENV,
    SIGNATURE_FILE,
    secret_path,
    sign_sweep,
    signed_files,
    user_key,
    verify_sweep,
)
from tests.test_cli import esper_here


@pytest.fixture(autouse=True)
def secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own secret file (created on first use), never the user's."""
    path = tmp_path / "home" / "esper" / "secret"
    monkeypatch.setenv(SECRET_ENV, str(path))
    return path


def _sweep_dir(root: Path) -> Path:
    """A run directory holding what Tune leaves: pickles, JSON state, a trial's checkpoint."""
    run = root / "run"
    files = {
        "tuner.pkl": b"\x80\x05tuner",
        "experiment_state-2026-01-01_00-00-00.json": b'{"trial_data": []}',
        "basic-variant-state-2026-01-01_00-00-00.json": b"{}",
        "member_t0/params.pkl": b"\x80\x05params",
        "member_t0/params.json": b"{}",
        "member_t0/checkpoint_000000/member.pt": b"tensors",
    }
    for name, content in files.items():
        path = run / "tune" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    (run / "run.json").write_text("{}")
    return run


def test_the_signature_covers_what_tune_deserializes_in_sorted_order(tmp_path: Path) -> None:
    run = _sweep_dir(tmp_path)
    names = [p.relative_to(run / "tune").as_posix() for p in signed_files(run)]
    assert names == [
        "basic-variant-state-2026-01-01_00-00-00.json",
        "experiment_state-2026-01-01_00-00-00.json",
        "member_t0/params.json",
        "member_t0/params.pkl",
        "tuner.pkl",
    ]  # not the checkpoint: Esper loads it with weights_only=True


def test_a_signed_sweep_is_accepted(tmp_path: Path) -> None:
    run = _sweep_dir(tmp_path)
    signature = sign_sweep(run)
    assert signature == run / SIGNATURE_FILE
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []  # no temporaries
    verify_sweep(run, trust=False)
    (run / "tune" / "member_t0" / "checkpoint_000000" / "member.pt").write_bytes(b"newer")
    verify_sweep(run, trust=False)  # checkpoints are not Tune's pickles


def test_an_unsigned_sweep_is_refused_naming_the_risk_and_the_fix(tmp_path: Path) -> None:
    run = _sweep_dir(tmp_path)
    with pytest.raises(ConfigError) as refused:
        verify_sweep(run, trust=False)
    message = str(refused.value)
    assert "is not signed" in message and "unpickles" in message and "runs any code" in message
    assert f"esper sweep --resume {run} --trust" in message
    verify_sweep(run, trust=True)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("edit", "tuner.pkl (changed)"),
        ("add", "member_t0/error.pkl (added)"),
        ("remove", "member_t0/params.pkl (removed)"),
    ],
)
def test_a_sweep_changed_after_signing_is_refused_naming_the_file(
    tmp_path: Path, change: str, named: str
) -> None:
    run = _sweep_dir(tmp_path)
    sign_sweep(run)
    tune = run / "tune"
    if change == "edit":
        (tune / "tuner.pkl").write_bytes(b"\x80\x05evil")
    elif change == "add":
        (tune / "member_t0" / "error.pkl").write_bytes(b"\x80\x05evil")
    else:
        (tune / "member_t0" / "params.pkl").unlink()
    with pytest.raises(ConfigError, match="changed since you signed it") as refused:
        verify_sweep(run, trust=False)
    assert named in str(refused.value) and "--trust" in str(refused.value)
    verify_sweep(run, trust=True)


def test_a_signature_edited_to_match_altered_files_is_refused(tmp_path: Path) -> None:
    run = _sweep_dir(tmp_path)
    sign_sweep(run)
    (run / "tune" / "tuner.pkl").write_bytes(b"\x80\x05evil")
    signature = json.loads((run / SIGNATURE_FILE).read_text())
    signature["files"]["tuner.pkl"] = "0" * 64  # anyone can hash; only the key can sign
    (run / SIGNATURE_FILE).write_text(json.dumps(signature))
    with pytest.raises(ConfigError, match="signature that was altered"):
        verify_sweep(run, trust=False)
    (run / SIGNATURE_FILE).write_text("not json")
    with pytest.raises(ConfigError, match="not one Esper wrote"):
        verify_sweep(run, trust=False)


def test_a_sweep_signed_with_another_users_key_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _sweep_dir(tmp_path)
    monkeypatch.setenv(SECRET_ENV, str(tmp_path / "someone_else" / "secret"))
    sign_sweep(run)
    monkeypatch.setenv(SECRET_ENV, str(tmp_path / "mine" / "secret"))
    with pytest.raises(ConfigError, match="signed with another key") as refused:
        verify_sweep(run, trust=False)
    assert "--trust" in str(refused.value)
    verify_sweep(run, trust=True)
    sign_sweep(run)  # a trusted, resumed sweep is signed with this user's key when it stops
    verify_sweep(run, trust=False)


def test_the_secret_is_private_made_once_and_refused_when_others_can_read_it(
    secret: Path,
) -> None:
    assert secret_path() == secret and not secret.exists()
    key = user_key()
    assert len(key) == 32 and user_key() == key
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(secret.parent.stat().st_mode) == 0o700
    assert [p.name for p in secret.parent.iterdir()] == ["secret"]
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match=f"chmod 600 {secret}"):
        user_key()
    secret.chmod(0o600)
    secret.write_text("short\n")
    with pytest.raises(ConfigError, match="remove it"):
        user_key()


def test_cli_resume_of_an_unsigned_sweep_exits_2_before_ray_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    import esper.commands.sweep as sweep_module

    run = _sweep_dir(tmp_path)
    (run / "run.json").write_text(json.dumps({"config": to_plain(compose([]))}))

    def no_ray(*_: object) -> None:
        raise ConfigError("start_ray was called")

    monkeypatch.setattr(sweep_module, "start_ray", no_ray)
    out = esper_here(capsys, "sweep", "--resume", str(run))
    assert out.returncode == 2 and "is not signed" in out.stderr and "--trust" in out.stderr
    assert not ray.is_initialized()
    out = esper_here(capsys, "sweep", "--resume", str(run), "--trust")
    assert out.returncode == 2 and "start_ray was called" in out.stderr  # past the check
    out = esper_here(capsys, "sweep", "--trust", "search=random")
    assert out.returncode == 2 and "--trust goes with --resume" in out.stderr
