"""Scheme operators: every type with RELION's semantics (and the help text's where RELION errs)."""

from __future__ import annotations

import pandas as pd
import pytest

from vitrify.io.errors import InputError
from vitrify.io.star import write_star
from vitrify.pipeline.schemes.model import Operator, Scheme
from vitrify.pipeline.schemes.operators import OPERATORS, SIGNATURES, OperatorContext, execute_operator


def _scheme() -> Scheme:
    s = Scheme(name="Schemes/t/")
    for name, value in {"a": 3.0, "b": 4.0, "zero": 0.0, "n": 2.0, "neg": -1.0, "out": 0.0,
                        "idx": 1.0}.items():
        s.floats[name] = s.floats_reset[name] = value
    for name, value in {"t": True, "f": False, "res": False}.items():
        s.bools[name] = s.bools_reset[name] = value
    for name, value in {"words": "x,y,z", "path": "d/file.star", "sep": "/", "sres": "",
                        "spec": "tab.star,items,rlnValue", "table": "items", "none": "undefined",
                        "src": "a.txt", "dst": "sub/b.txt", "pattern": "g/*.mrc"}.items():
        s.strings[name] = s.strings_reset[name] = value
    return s


def _run(tmp_path, scheme, type_, out="undefined", in1="undefined", in2="undefined"):
    ctx = OperatorContext(scheme=scheme, project_dir=tmp_path, log=lambda m: None)
    return execute_operator(ctx, Operator("OP", type_, out, in1, in2))


def test_every_type_has_a_signature():
    assert set(OPERATORS) == set(SIGNATURES)


@pytest.mark.parametrize("type_, in1, in2, expected", [
    ("bool=and", "t", "f", False), ("bool=or", "t", "f", True), ("bool=not", "f", "undefined", True),
    ("bool=set", "t", "undefined", True), ("bool=gt", "b", "a", True), ("bool=lt", "b", "a", False),
    ("bool=ge", "a", "a", True), ("bool=le", "b", "a", False), ("bool=eq", "a", "a", True),
    ("bool=gt", "a", "2.5", True),   # literal number: RELION 4 reads it as 0, we read 2.5
    ("bool=lt", "a", "2.5", False),
])
def test_bool_operators(tmp_path, type_, in1, in2, expected):
    s = _scheme()
    assert _run(tmp_path, s, type_, "res", in1, in2) is True
    assert s.bools["res"] is expected


@pytest.mark.parametrize("type_, in1, in2, expected", [
    ("float=plus", "a", "b", 7.0), ("float=minus", "a", "b", -1.0), ("float=mult", "a", "b", 12.0),
    ("float=divide", "a", "b", 0.75), ("float=plus", "a", "10", 13.0), ("float=set", "b", "undefined", 4.0),
    ("float=round", "neg", "undefined", -1.0), ("float=count_words", "words", "undefined", 3.0),
    ("float=count_words", "none", "undefined", 0.0),
])
def test_float_operators(tmp_path, type_, in1, in2, expected):
    s = _scheme()
    _run(tmp_path, s, type_, "out", in1, in2)
    assert s.floats["out"] == pytest.approx(expected)


def test_divide_by_zero_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="division by zero"):
        _run(tmp_path, _scheme(), "float=divide", "out", "a", "zero")


@pytest.mark.parametrize("type_, in1, in2, expected", [
    ("string=join", "path", "sep", "d/file.star/"), ("string=set", "words", "undefined", "x,y,z"),
    ("string=before_first", "path", "sep", "d"), ("string=after_first", "path", "sep", "file.star"),
    ("string=before_last", "words", "sep", "x,y,z"),      # separator absent: whole string
    ("string=nth_word", "words", "n", "y"), ("string=nth_word", "words", "neg", "z"),  # from the end
    ("string=nth_word", "words", "10", "undefined"),
])
def test_string_operators(tmp_path, type_, in1, in2, expected):
    s = _scheme()
    _run(tmp_path, s, type_, "sres", in1, in2)
    assert s.strings["sres"] == expected


def test_before_and_after_last(tmp_path):
    s = _scheme()
    s.strings["path"] = "a/b/c"
    _run(tmp_path, s, "string=before_last", "sres", "path", "sep")
    assert s.strings["sres"] == "a/b"
    _run(tmp_path, s, "string=after_last", "sres", "path", "sep")
    assert s.strings["sres"] == "c"


def _table(tmp_path, values):
    write_star(tmp_path / "tab.star", {"items": pd.DataFrame({"rlnValue": values,
                                                              "rlnName": [f"n{i}" for i in range(len(values))]})})


def test_star_table_statistics_and_sort(tmp_path):
    _table(tmp_path, [5.0, 1.0, 9.0, 3.0])
    s = _scheme()
    results = {}
    for type_ in ("max", "min", "avg", "max_idx", "min_idx"):
        _run(tmp_path, s, f"float=star_table_{type_}", "out", "spec")
        results[type_] = s.floats["out"]
    assert results == {"max": 9.0, "min": 1.0, "avg": 4.5, "max_idx": 2.0, "min_idx": 1.0}
    _run(tmp_path, s, "float=star_table_sort_idx", "out", "spec", "idx")   # 1st largest
    assert s.floats["out"] == 2.0
    _run(tmp_path, s, "float=star_table_sort_idx", "out", "spec", "neg")   # 1st smallest
    assert s.floats["out"] == 1.0
    _run(tmp_path, s, "float=star_table_sort_idx", "out", "spec", "2")     # 2nd largest
    assert s.floats["out"] == 0.0
    with pytest.raises(InputError):
        _run(tmp_path, s, "float=star_table_sort_idx", "out", "spec", "zero")


def test_read_star_row_and_types(tmp_path):
    _table(tmp_path, [5.0, 1.0, 9.0])
    s = _scheme()
    _run(tmp_path, s, "float=read_star", "out", "spec", "idx")
    assert s.floats["out"] == 1.0
    s.strings["spec"] = "tab.star,items,rlnName"
    _run(tmp_path, s, "string=read_star", "sres", "spec", "n")
    assert s.strings["sres"] == "n2"
    _run(tmp_path, s, "string=read_star", "sres", "spec", "1")        # literal row index
    assert s.strings["sres"] == "n1"
    _run(tmp_path, s, "string=read_star", "sres", "spec", "words")    # not a number: row 0
    assert s.strings["sres"] == "n0"
    s.strings["spec"] = "tab.star,items,rlnNoSuchLabel"
    with pytest.raises(InputError, match="rlnNoSuchLabel"):
        _run(tmp_path, s, "float=read_star", "out", "spec")


def test_count_images_and_file_exists(tmp_path):
    s = _scheme()
    s.strings["path"] = "tab.star"
    _run(tmp_path, s, "float=count_images", "out", "path", "table")
    assert s.floats["out"] == 0.0                       # missing file counts 0
    _run(tmp_path, s, "bool=file_exists", "res", "path")
    assert s.bools["res"] is False
    _table(tmp_path, [1.0, 2.0, 3.0])
    _run(tmp_path, s, "float=count_images", "out", "path", "table")
    assert s.floats["out"] == 3.0
    _run(tmp_path, s, "bool=file_exists", "res", "path")
    assert s.bools["res"] is True


def test_file_operators_and_glob(tmp_path):
    s = _scheme()
    _run(tmp_path, s, "touch_file", in1="src")
    assert (tmp_path / "a.txt").exists()
    _run(tmp_path, s, "copy_file", in1="src", in2="dst")
    assert (tmp_path / "sub/b.txt").exists() and (tmp_path / "a.txt").exists()
    s.strings["dst"] = "moved/c.txt"
    _run(tmp_path, s, "move_file", in1="src", in2="dst")
    assert (tmp_path / "moved/c.txt").exists() and not (tmp_path / "a.txt").exists()
    s.strings["src"] = "moved/c.txt"
    _run(tmp_path, s, "delete_file", in1="src")
    assert not (tmp_path / "moved/c.txt").exists()
    _run(tmp_path, s, "string=glob", "sres", "pattern")
    assert s.strings["sres"] == "undefined"
    (tmp_path / "g").mkdir()
    for name in ("2.mrc", "1.mrc", "x.txt"):
        (tmp_path / "g" / name).touch()
    _run(tmp_path, s, "string=glob", "sres", "pattern")
    assert s.strings["sres"] == "g/1.mrc,g/2.mrc"


def test_wait_exit_and_maxtime(tmp_path):
    s = _scheme()
    clock = [100.0]
    ctx = OperatorContext(scheme=s, project_dir=tmp_path, log=lambda m: None, now=lambda: clock[0])
    wait = Operator("W", "wait", "out", "a")
    assert execute_operator(ctx, wait) and ctx.last_wait == 100.0      # first call: no wait
    clock[0] = 110.0                                                    # already 10 s > 3 s later
    execute_operator(ctx, wait)
    assert s.floats["out"] == 10.0
    maxtime = Operator("M", "exit_maxtime", "undefined", "a")          # 3 hours
    assert execute_operator(ctx, maxtime) is True
    clock[0] += 3 * 3600 - 1
    assert execute_operator(ctx, maxtime) is True
    clock[0] += 2
    assert execute_operator(ctx, maxtime) is False
    assert execute_operator(ctx, Operator("E", "exit")) is False


def test_wait_really_waits_and_is_abort_aware(tmp_path):
    import time

    s = _scheme()
    s.floats["a"] = 0.3
    ctx = OperatorContext(scheme=s, project_dir=tmp_path, log=lambda m: None, sleep_step_s=0.05)
    wait = Operator("W", "wait", "out", "a")
    execute_operator(ctx, wait)
    start = time.monotonic()
    execute_operator(ctx, wait)
    assert 0.25 < time.monotonic() - start < 2.0
    s.floats["a"] = 60.0
    ctx.abort_requested = lambda: True
    start = time.monotonic()
    execute_operator(ctx, wait)
    assert time.monotonic() - start < 1.0


def test_translated_job_paths_in_string_variables(tmp_path):
    s = _scheme()
    s.strings["path"] = "Schemes/t/select/particles.star"
    from vitrify.pipeline.schemes.model import SchemeJob
    from vitrify.pipeline.schemes.names import translate_job_names

    s.jobs["select"] = SchemeJob("select", "Select/job007/", "new", True)
    ctx = OperatorContext(scheme=s, project_dir=tmp_path, log=lambda m: None,
                          translate=lambda v: translate_job_names(v, s, tmp_path))
    (tmp_path / "Select/job007").mkdir(parents=True)
    (tmp_path / "Select/job007/particles.star").touch()
    execute_operator(ctx, Operator("F", "bool=file_exists", "res", "path"))
    assert s.bools["res"] is True
    assert s.strings["path"] == "Schemes/t/select/particles.star"      # original kept


def test_email_without_address_is_silent(tmp_path):
    assert _run(tmp_path, _scheme(), "email", in1="a", in2="t") is True
