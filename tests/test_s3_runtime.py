"""The README's two-work app on a shared S3 store, run as a user would, three rounds."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from cas_storage import Store

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme_app() -> str:
    """The first python block after the README's "A two-work app" heading."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as readme:
        text = readme.read()
    section = text[text.index("## A two-work app") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README lost its two-work app"
    return match.group(1)


def test_the_readme_app_runs_three_rounds_on_one_s3_store(s3_url, tmp_path):
    app = tmp_path / "app.py"
    app.write_text(_readme_app())
    for round_ in range(3):
        launch = tmp_path / f"round{round_}"  # each round a new machine: its own files
        launch.mkdir()
        env = {
            **os.environ,
            "CAS_STORE": s3_url,
            "CAS_STATE": str(launch / "state.db"),
            "CAS_EXECUTOR": "local",
        }
        done = subprocess.run(
            [sys.executable, "-m", "runtime", "run", str(app)],
            cwd=launch,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, f"round {round_}: {done.stderr}"
        assert "b'weights'" in done.stdout
        assert not (launch / ".cas").exists()  # everything went to the bucket
    store = Store.open(s3_url, state=str(tmp_path / "reader.db"))
    versions = store.versions("root.train", "outputs/ckpt")
    assert [v.number for v in versions] == [1]  # the same content every round: one version
    assert store.verify() == []
