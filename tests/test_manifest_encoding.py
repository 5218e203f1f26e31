"""The hand-written fast paths of manifest encoding agree with their plain definitions."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from cas_storage.manifest import DIR, FILE, FORMAT, SYMLINK, Entry, Manifest

hexes = st.text("0123456789abcdef", min_size=32, max_size=32)
names = st.text(min_size=1, max_size=12).filter(
    lambda n: "/" not in n and "\0" not in n and n not in (".", "..")
)


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    entries = []
    for name in draw(st.lists(names, unique=True, max_size=8)):
        kind = draw(st.sampled_from([FILE, FILE, DIR, SYMLINK]))
        mode = draw(st.integers(0, 0o777))
        if kind == FILE:
            chunks = tuple(draw(st.lists(st.tuples(hexes, st.integers(1, 2**40)), max_size=4)))
            size = sum(n for _, n in chunks) if chunks else draw(st.integers(0, 2**40))
            entries.append(Entry(name, FILE, mode, size, draw(hexes), chunks))
        elif kind == SYMLINK:
            entries.append(Entry(name, SYMLINK, 0o777, target=draw(names)))
        else:
            entries.append(Entry(name, DIR, mode))
    return Manifest.build(DIR, entries, validate=False)


def reference_encoding(manifest: Manifest) -> bytes:
    body = {
        "format": FORMAT,
        "kind": manifest.kind,
        "entries": [e.to_json() for e in manifest.entries],
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@settings(max_examples=300, deadline=None)  # no timing in tests: the machine is shared
@given(manifests())
def test_encode_is_the_canonical_json(manifest: Manifest) -> None:
    assert manifest.encode() == reference_encoding(manifest)
    assert Manifest.decode(manifest.encode()) == manifest


@settings(max_examples=300, deadline=None)  # no timing in tests: the machine is shared
@given(manifests())
def test_objects_in_reads_exactly_the_objects_of_the_encoding(manifest: Manifest) -> None:
    assert Manifest.objects_in(manifest.encode()) == manifest.objects()


def test_objects_in_is_not_fooled_by_names_that_spell_digests() -> None:
    fake = "f" * 32
    entries = [
        Entry(f'{{"digest":"{fake}"', FILE, 0o644, 1, "1" * 32),
        Entry(f'["{fake}",1]', SYMLINK, 0o777, target=f'["{fake}",2]'),
        Entry("c", FILE, 0o644, 3, "2" * 32, (("3" * 32, 1), ("4" * 32, 2))),
    ]
    manifest = Manifest.build(DIR, entries)
    assert Manifest.objects_in(manifest.encode()) == {"1" * 32, "3" * 32, "4" * 32}


@settings(max_examples=100, deadline=None)
@given(manifests())
def test_kind_in_reads_the_kind_of_any_encoding(manifest: Manifest) -> None:
    assert Manifest.kind_in(manifest.encode()) == manifest.kind
    spaced = json.dumps(json.loads(manifest.encode()), indent=1).encode()  # not canonical
    assert Manifest.kind_in(spaced) == manifest.kind


def test_kind_in_does_not_take_a_name_for_the_kind() -> None:
    """A path spelling the tail is inside the entries, never at the end."""
    tail = f',"format":{FORMAT},"kind":"file"}}'
    manifest = Manifest.build(DIR, [Entry(tail, FILE, 0o644, 1, "1" * 32)])
    assert Manifest.kind_in(manifest.encode()) == DIR
