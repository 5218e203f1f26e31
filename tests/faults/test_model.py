"""Guarantee 7: random operation sequences agree with a simple model of the store.

The model is a list of versions, each a ``{relative path: bytes}`` dict. Rules
edit and delete source files (same-size edits included, so the stat cache must
notice), snapshot, check out any version fresh or over a kept destination, and
scribble on that destination. After each step the store must agree: version
numbers, which snapshots create a version, and every byte checked out.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cas_storage import Store
from faults.faultkit import read_files

NAMES = ["a", "b.bin", "d/x", "d/y", "d/e/z", "f/g"]
CONTENTS = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([b"", b"same", b"SAME", b"x" * 5000]),  # same sizes, shared content
)


class StoreModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="cas-model-"))
        self.store = Store.open(self.tmp / ".cas", state=str(self.tmp / "state.db"))
        self.src = self.tmp / "src"
        self.src.mkdir()
        self.files: dict[str, bytes] = {}  # what src holds now
        self.versions: list[dict[str, bytes]] = []  # the model of the store
        self.dest = self.tmp / "dest"
        self.dest_holds: dict[str, bytes] | None = None  # what dest should hold
        self.fresh = 0

    @rule(name=st.sampled_from(NAMES), content=CONTENTS)
    def write(self, name: str, content: bytes) -> None:
        full = self.src / name
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_bytes(content)
        self.files[name] = content

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def delete(self, data) -> None:
        name = data.draw(st.sampled_from(sorted(self.files)))
        (self.src / name).unlink()
        del self.files[name]
        parent = (self.src / name).parent
        while parent != self.src and not any(parent.iterdir()):  # folders exist only with files
            parent.rmdir()
            parent = parent.parent

    @rule()
    def age_sources(self) -> None:
        """Make every source file old, so the stat cache may vouch for it from now on."""
        for name in self.files:
            os.utime(self.src / name, ns=(10**18, 10**18 + len(name)))

    @rule()
    def snapshot(self) -> None:
        version = self.store.snapshot("w", "p", self.src)
        if not self.versions or self.files != self.versions[-1]:
            self.versions.append(dict(self.files))
        assert version.number == len(self.versions), "a snapshot made a version or lost one"
        assert version.files == len(self.files)

    @precondition(lambda self: self.versions)
    @rule(data=st.data())
    def checkout_fresh(self, data) -> None:
        number = data.draw(st.integers(1, len(self.versions)))
        self.fresh += 1
        out = self.tmp / f"fresh{self.fresh}"
        result = self.store.checkout("w", "p", out, version=number)
        assert result.version == number
        assert read_files(out) == self.versions[number - 1]
        shutil.rmtree(out)

    @precondition(lambda self: self.versions)
    @rule(data=st.data())
    def checkout_overwrite(self, data) -> None:
        number = data.draw(st.integers(1, len(self.versions)))
        self.store.checkout("w", "p", self.dest, version=number, overwrite=True)
        self.dest_holds = self.versions[number - 1]

    @precondition(lambda self: self.dest_holds is not None)
    @rule(name=st.sampled_from(NAMES + ["local-only"]), content=st.one_of(st.none(), CONTENTS))
    def scribble_on_dest(self, name: str, content: bytes | None) -> None:
        full = self.dest / name
        if content is None:
            if full.is_file():
                full.unlink()
        elif not full.parent.is_file():
            full.parent.mkdir(parents=True, exist_ok=True)
            full.write_bytes(content)
        self.dest_holds = None  # unknown until the next overwrite checkout restores it

    @invariant()
    def dest_matches(self) -> None:
        if self.dest_holds is not None:
            assert read_files(self.dest) == self.dest_holds

    @invariant()
    def catalog_matches(self) -> None:
        assert [v.number for v in self.store.versions("w", "p")] == list(
            range(1, len(self.versions) + 1)
        )

    def teardown(self) -> None:
        self.store.close()
        for dirpath, dirs, _ in os.walk(self.tmp):
            for d in dirs:
                os.chmod(os.path.join(dirpath, d), 0o755)
        shutil.rmtree(self.tmp)


StoreModel.TestCase.settings = settings(
    max_examples=int(os.environ.get("CAS_MODEL_EXAMPLES", 50)),
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_store_agrees_with_model = StoreModel.TestCase
