"""A short libFuzzer run over the request parser (clang with -fsanitize=fuzzer)."""
import pathlib
import shutil
import subprocess

import pytest

from conftest import REPO

HERE = pathlib.Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def fuzzer(work_dir):
    clang = shutil.which("clang++")
    if clang is None:
        pytest.skip("clang++ is not installed (apt-get install clang)")
    binary = work_dir / "fuzz_request_parser"
    result = subprocess.run(
        [clang, "-std=c++20", "-g", "-O1", "-fsanitize=fuzzer,address,undefined",
         f"-I{REPO}", str(HERE / "fuzz_request_parser.cpp"), str(REPO / "proxy" / "http_request.cpp"),
         "-o", str(binary)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot build the fuzzer: {result.stderr[-500:]}")
    return binary


def test_request_parser_survives_fuzzing(fuzzer, work_dir):
    corpus = work_dir / "fuzz_corpus"
    shutil.rmtree(corpus, ignore_errors=True)  # a corpus grown by earlier runs would vary the inputs
    corpus.mkdir()
    for seed in (HERE / "fuzz_corpus").iterdir():
        shutil.copy(seed, corpus / seed.name)
    # A fixed seed and run count: the same inputs on every run, so CI cannot fail by chance;
    # inputs that once broke the parser are kept in fuzz_corpus/ as regressions.
    result = subprocess.run([str(fuzzer), "-seed=1", "-runs=150000", "-max_total_time=60",
                             "-max_len=4096",
                             f"-artifact_prefix={work_dir}/", str(corpus)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
