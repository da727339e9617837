"""The shared data folder is found relative to the repository (or $VITRIFY_SHARED), and CI never skips it."""

from __future__ import annotations

import pytest

import conftest


def _fixtures(root, name="relion4_schemes"):
    folder = root / "fixtures" / name
    folder.mkdir(parents=True)
    return folder


def test_beside_the_repository_and_beside_a_worktree_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("VITRIFY_SHARED", raising=False)
    monkeypatch.setattr(conftest, "REPOSITORY", tmp_path / "wt" / "clone")
    outer = _fixtures(tmp_path / "shared")  # <root>/shared, seen from <root>/wt/clone
    assert conftest.shared_fixtures("relion4_schemes") == outer
    beside = _fixtures(tmp_path / "wt" / "shared")  # <repo>/../shared wins
    assert conftest.shared_fixtures("relion4_schemes") == beside


def test_environment_variable_overrides(tmp_path, monkeypatch):
    monkeypatch.setattr(conftest, "REPOSITORY", tmp_path / "clone")
    _fixtures(tmp_path / "shared")
    chosen = _fixtures(tmp_path / "elsewhere")
    monkeypatch.setenv("VITRIFY_SHARED", str(tmp_path / "elsewhere"))
    assert conftest.shared_fixtures("relion4_schemes") == chosen


def test_missing_folder_skips_locally_and_fails_under_ci(tmp_path, monkeypatch):
    monkeypatch.setenv("VITRIFY_SHARED", str(tmp_path / "nowhere"))
    monkeypatch.delenv("CI", raising=False)
    mark = conftest.needs_shared("acquisition")
    assert mark.args == (True,)
    assert "nowhere/fixtures/acquisition" in mark.kwargs["reason"]
    assert "VITRIFY_SHARED" in mark.kwargs["reason"]
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="'acquisition' not found"):
        conftest.needs_shared("acquisition")
