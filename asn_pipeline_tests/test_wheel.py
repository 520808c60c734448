"""The package installed from its wheel, outside the source tree, is a working code location.

The code-location image (deploy/Dockerfile) is built with the same two pip commands this test
runs; ``test_the_dockerfile_installs_the_image_with_the_same_commands`` holds them to each other.
The install reaches PyPI through pip's usual client (a minute or so, see docs/deployment.md).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import dagster as dg

from asn_pipeline import demo
from asn_pipeline_tests.conftest import Pipeline, assert_exact

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "deploy" / "Dockerfile"
# What the image's build stage copies: enough to build the wheel, nothing else of the checkout.
IMAGE_SOURCES = ("pyproject.toml", "README.md", "asn_pipeline")
# The image serves the code location, launches runs as Kubernetes jobs (k8s) and can hand steps
# to Celery workers when ASN_PIPELINE_EXECUTOR=celery (celery); never the demo extra.
EXTRAS = "k8s,celery"
BUILD_WHEEL = ("pip", "wheel", "--no-deps", "--wheel-dir", "{wheels}", "{src}")
INSTALL_WHEEL = ("pip", "install", "{wheel}[" + EXTRAS + "]")
DAY = demo.GZIPPED_DAY  # a day of two sensors, one of them gzip-compressed
PIP_TIMEOUT = 900


def pip_command(template: tuple[str, ...], python: Path, **values: str) -> list[str]:
    """``template`` with its placeholders filled, run as ``python -m pip``."""
    return [str(python), "-m", *(part.format(**values) for part in template)]


def clean_environ(**extra: str) -> dict[str, str]:
    """This process's environment without the variables that would point a child at the checkout,
    its venv or its configuration."""
    dropped = ("PYTHON", "VIRTUAL_ENV", "ASN_PIPELINE_", "DAGSTER_", "PYTEST_", "PIP_REQUIRE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    return {**env, **extra}


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: int):
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, (
        f"{shlex.join(command)}\n{done.stdout[-3000:]}{done.stderr[-5000:]}"
    )
    return done


def build_wheel(tmp_path: Path) -> Path:
    """The wheel built as the image's build stage builds it: from a copy of ``IMAGE_SOURCES``
    (so the checkout gets no build/ folder)."""
    src, wheels = tmp_path / "src", tmp_path / "wheels"
    src.mkdir()
    for name in IMAGE_SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    command = pip_command(BUILD_WHEEL, Path(sys.executable), wheels=str(wheels), src=str(src))
    run(command, tmp_path, clean_environ(), PIP_TIMEOUT)
    [wheel] = wheels.glob("asn_pipeline-*.whl")
    return wheel


def test_the_wheel_carries_every_module_and_sql_file_and_no_tests(tmp_path):
    wheel = build_wheel(tmp_path)

    names = set(zipfile.ZipFile(wheel).namelist())
    package = REPO / "asn_pipeline"
    expected = {
        f"asn_pipeline/{path.relative_to(package).as_posix()}"
        for pattern in ("*.sql", "*.py")
        for path in package.rglob(pattern)
    }
    assert {n for n in expected if n.endswith(".sql")}, "no SQL files found in the checkout"
    assert expected - names == set()
    assert not [n for n in names if n.startswith(("asn_pipeline_tests/", "sql/", "bench/"))]


def test_the_wheel_installed_in_a_fresh_venv_materialises_a_partition_exactly(
    tmp_path, monkeypatch
):
    wheel = build_wheel(tmp_path)
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], tmp_path, clean_environ(), 300)
    python = venv / "bin" / "python"
    # Byte-compiling every installed module would add about 15 s; imports compile what they use.
    install = pip_command(INSTALL_WHEEL, python, wheel=str(wheel))
    run(install, tmp_path, clean_environ(PIP_NO_COMPILE="1"), PIP_TIMEOUT)

    data = demo.generate(tmp_path / "demo")
    work = tmp_path / "work"  # the working directory: outside the checkout and the venv
    work.mkdir()
    env = clean_environ(
        PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        DAGSTER_HOME=str(tmp_path / "dagster_home"),
        ASN_PIPELINE_LANDING_DIR=str(data["landing"]),
        ASN_PIPELINE_MAXMIND_ASN_DB=str(data["asn_db"]),
        ASN_PIPELINE_MAXMIND_CITY_DB=str(data["city_db"]),
    )
    (tmp_path / "dagster_home").mkdir()

    # What the fresh venv imports, from a directory outside the checkout.
    probe = (
        "import importlib.util, json, asn_pipeline, asn_pipeline.settings as s; "
        "print(json.dumps({'file': asn_pipeline.__file__, 'root': str(s.PROJECT_ROOT), "
        "'mmdb_writer': importlib.util.find_spec('mmdb_writer') is not None, "
        "'dagster_k8s': importlib.util.find_spec('dagster_k8s') is not None}))"
    )
    found = json.loads(run([str(python), "-c", probe], work, env, 120).stdout)
    site_packages = next((venv / "lib").glob("python3*/site-packages"))
    assert Path(found["file"]).resolve().is_relative_to(site_packages.resolve()), found
    assert not Path(found["file"]).resolve().is_relative_to(REPO), found
    assert Path(found["root"]) == work.resolve(), "installed, the defaults live under the cwd"
    assert found["mmdb_writer"] is False, "the demo extra is not a runtime requirement"
    assert found["dagster_k8s"] is True
    dagster_cli = venv / "bin" / "dagster"
    assert dagster_cli.read_text().splitlines()[0] == f"#!{python}"

    result = subprocess.run(
        [str(dagster_cli), "asset", "materialize", "-m", "asn_pipeline.definitions"]
        + ["--select", "*", "--partition", DAY.isoformat()],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-5000:]

    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        [record] = instance.get_run_records()
        assert record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
        assert record.dagster_run.tags["dagster/partition"] == DAY.isoformat()
        checks = instance.all_logs(
            record.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        )
        installed_checks = {
            (
                e.dagster_event.asset_check_evaluation_data.check_name,
                e.dagster_event.asset_check_evaluation_data.passed,
            )
            for e in checks
        }

    # Without ASN_PIPELINE_DB_URL the installed package writes data/inventory.sqlite in the cwd.
    inventory = work / "data" / "inventory.sqlite"
    assert inventory.is_file()
    installed = Pipeline(f"sqlite:///{inventory}", data["landing"], dg.DagsterInstance.ephemeral())
    assert_exact(installed)

    # The same day through the checkout's package, in this process: the same tables.
    for name, value in env.items():
        if name.startswith("ASN_PIPELINE_"):
            monkeypatch.setenv(name, value)
    reference_url = f"sqlite:///{tmp_path / 'reference.sqlite'}"
    monkeypatch.setenv("ASN_PIPELINE_DB_URL", reference_url)
    with dg.DagsterInstance.ephemeral() as instance:
        reference = Pipeline(reference_url, data["landing"], instance)
        [done] = reference.run(DAY)
    expected_checks = {(e.check_name, e.passed) for e in done.get_asset_check_evaluations()}
    assert installed_checks == expected_checks
    assert all(passed for _, passed in installed_checks)
    snapshot = installed.snapshot()
    assert snapshot == reference.snapshot()
    assert len(snapshot["sessions"]) > 100 and len(snapshot["rejected_events"]) > 0
    shutil.rmtree(venv)  # 550 MB; kept when the test fails, for a look


def dockerfile_runs() -> list[list[str]]:
    """Every ``RUN`` instruction of deploy/Dockerfile, continuation lines joined, as words."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    return [
        shlex.split(line.strip()[len("RUN ") :])
        for line in text.splitlines()
        if line.strip().startswith("RUN ")
    ]


def test_the_dockerfile_installs_the_image_with_the_same_commands():
    runs = dockerfile_runs()
    pip_runs = [words for words in runs if words[:1] == ["pip"]]
    image_build = [part.format(wheels="/wheels", src="/src") for part in BUILD_WHEEL]
    image_install = [
        part.format(wheel="$(ls /wheels/asn_pipeline-*.whl)") for part in INSTALL_WHEEL
    ]
    assert pip_runs == [image_build, image_install]

    copied = set()
    for line in DOCKERFILE.read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            copied.update(Path(source).as_posix().rstrip("/") for source in words[1:-1])
    assert copied == set(IMAGE_SOURCES)
