"""Shared test configuration: strict numerics (rank and dtype promotion raise), a float64 context, and bounded
hypothesis profiles."""

import os

# Compile with LLVM at optimisation level 0 (set before JAX starts its backend; subprocesses inherit it). The suite
# compiles far more than it runs -- most tests are small shapes, each compiled once -- and level 0 cuts XLA's CPU
# compile time by about 40 % (LogME's evidence maximisation: 1.07 s -> 0.63 s; the suite: 1233 s -> 863 s). Results
# move by the rounding of fused ops only (measured: LogME, TransRate and H-score bitwise equal; EfficientNet-Lite0
# logits under jit 2e-5 apart at a scale of 20, as jit and eager are); the docs and notebooks run at the default.
os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0"]).strip()

import jax
import pytest
from hypothesis import HealthCheck, settings

jax.config.update("jax_numpy_rank_promotion", "raise")
# Multi-device code is tested in process on 8 CPU devices; single-device code runs on the first, as everywhere.
jax.config.update("jax_num_cpu_devices", 8)

# The scripts that made the fixtures (they need sentence-transformers or torch, and write files): not collected by
# --doctest-modules.
collect_ignore_glob = ["*/fixtures/*.py"]

settings.register_profile(
    "default",
    max_examples=20,
    deadline=None,
    # The x64 fixture sets a global mode that holds for every generated input alike.
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.differing_executors,
        HealthCheck.function_scoped_fixture,
    ],
)
# CI: fixed examples (derandomised), fewer of them: the suite must stay under 10 minutes on CI's 2 cores.
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True, max_examples=12)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture
def compiles():
    """The XLA backend compilations made while the test body runs (``jax.monitoring``), one entry each."""
    events = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            events.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield events
    finally:
        jax.monitoring.clear_event_listeners()


@pytest.fixture
def x64():
    """Runs the test with float64 enabled (jax_enable_x64), restoring the previous state afterwards."""
    with jax.enable_x64(True):
        yield


# Implicit dtype promotion raises in the array core's tests (as in equinox's suite): a score that mixed int32 with
# float64, or float32 with float64, fails here instead of silently computing in another precision. optax does not
# run under strict promotion (its int32 step counters meet Python floats), so the tests of what trains with it --
# the trainer, the models, the experiments -- run under standard promotion (learned_soup switches to standard
# promotion for its optax steps itself).
_STANDARD_PROMOTION = {"finetune", "models", "experiments", "test_finetune.py", "test_files.py", "test_docs.py"}


@pytest.fixture(autouse=True)
def _strict_dtype_promotion(request):
    uses_optax = _STANDARD_PROMOTION.intersection(request.path.parts)
    with jax.numpy_dtype_promotion("standard" if uses_optax else "strict"):
        yield


def pytest_sessionfinish(session, exitstatus):
    """On CI (CI=true) a skipped test is a failure: CI installs torch and the data wheels, so every skip there means
    a test that was meant to run did not."""
    if not os.environ.get("CI"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped:
        reporter.write_line(f"CI: {len(skipped)} test(s) skipped that CI must run:", red=True)
        for report in skipped[:20]:
            reporter.write_line(
                f"  {report.nodeid}: {report.longrepr[-1] if isinstance(report.longrepr, tuple) else ''}"
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _mappings() -> int:
    try:
        with open("/proc/self/maps") as f:
            return sum(1 for _ in f)
    except OSError:  # not Linux
        return 0


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code():
    """Drops JAX's compilation caches after a test module once the process holds many memory mappings. Every
    compiled CPU executable holds some, and the suite compiles thousands of shapes: without this one process passed
    Linux's default limit of 65530 (vm.max_map_count) near the end of the run and LLVM segfaulted while compiling.
    (Clearing after every module instead recompiles what modules share: slower.)"""
    yield
    if _mappings() > 30000:
        jax.clear_caches()
