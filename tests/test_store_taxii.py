"""The TAXII repository (``store.taxii``) on both backends: roots, collections, permissions, keyset pages,
version flags, audiences, deletion and status resources."""

from __future__ import annotations

import pytest

from stormwatch.store import open_store
from stormwatch.store.repos.taxii import (
    ApiRoot,
    CollectionRow,
    NewObject,
    ObjectFilter,
    Permission,
    StatusRow,
    encode_audience,
)


def _new(
    cid: str, sid: str, vkey: str, added: str, *, typ: str = "indicator", aud: tuple[str, ...] | None = None
) -> NewObject:
    return NewObject(cid, sid, typ, vkey, vkey, "2.1", added, 0, aud, f'{{"id":"{sid}","v":"{vkey}"}}')


def _ts(i: int) -> str:
    return f"2025-01-01T00:00:{i:02d}.000000Z"


def test_roots_collections_and_permissions(db_url: str) -> None:
    with open_store(db_url) as store:
        t = store.taxii
        assert t.root("api1") is None and t.roots() == []
        assert t.add_root(ApiRoot("api2", "Two", None, 1024, _ts(2)))
        assert t.add_root(ApiRoot("api1", "One", "d", 2048, _ts(1)))
        assert not t.add_root(ApiRoot("api1", "Again", None, 1, _ts(3)))  # the first one stays
        root = t.root("api1")
        assert root is not None and root.max_content_length == 2048 and root.title == "One"
        assert t.roots() == ["api1", "api2"]  # creation order
        t.add_collection(CollectionRow("c1", "api1", "First", None, "first", _ts(1)))
        t.add_collection(CollectionRow("c2", "api1", "Second", "desc", None, _ts(2)))
        store.commit()
        assert [c.id for c in t.collections("api1")] == ["c1", "c2"] and t.collections("api2") == []
        assert t.collection("c1") == t.collection("c1", "api1") and t.collection("c1", "api2") is None
        assert t.collection("nope") is None
        t.set_permission(Permission("c1", "partner", True, False, False))
        t.set_permission(Permission("c1", "partner", True, True, True))  # replaced, not duplicated
        t.set_permission(Permission("c1", "*", True, False, False))
        store.commit()
        perms = t.permissions("c1")
        assert [(p.principal, p.can_write, p.red_named) for p in perms] == [
            ("*", False, False),
            ("partner", True, True),
        ]
        assert [p.principal for p in t.permissions("c1", ["partner", "other"])] == ["partner"]
        assert t.permissions("c1", []) == []
        assert t.red_named("c1") == ["partner"] and t.red_named("c2") == []


def test_pages_are_keyset_ordered_and_filtered(db_url: str) -> None:
    with open_store(db_url) as store:
        t = store.taxii
        objs = [_new("c1", f"indicator--{i}", _ts(i), _ts(i)) for i in range(5)]
        objs.append(_new("c1", "report--1", _ts(9), _ts(9), typ="report"))
        objs.append(_new("c2", "indicator--0", _ts(0), _ts(10)))
        t.add_objects(objs)
        store.commit()
        everything = t.page("c1", ObjectFilter(), reader="r", limit=100)
        assert [o.stix_id for o in everything] == [f"indicator--{i}" for i in range(5)] + ["report--1"]
        first = t.page("c1", ObjectFilter(), reader="r", limit=2)
        after = t.page("c1", ObjectFilter(after=(first[-1].date_added, first[-1].seq)), reader="r", limit=100)
        assert [o.stix_id for o in first + after] == [o.stix_id for o in everything]
        assert [o.stix_id for o in t.page("c1", ObjectFilter(types=("report",)), reader="r", limit=9)] == ["report--1"]
        assert len(t.page("c1", ObjectFilter(ids=("indicator--1", "indicator--2")), reader="r", limit=9)) == 2
        assert len(t.page("c1", ObjectFilter(added_after=_ts(3)), reader="r", limit=9)) == 2
        assert t.page("c1", ObjectFilter(spec_versions=("2.0",)), reader="r", limit=9) == []
        assert t.count_objects("c1") == 6 and t.count_objects() == 7
        with pytest.raises(ValueError):
            t.page("c1", ObjectFilter(), reader="r", limit=0)


def test_version_flags_follow_inserts_and_deletes(db_url: str) -> None:
    with open_store(db_url) as store:
        t = store.taxii
        t.add_objects([_new("c1", "indicator--1", _ts(2), _ts(2))])
        t.add_objects([_new("c1", "indicator--1", _ts(1), _ts(3)), _new("c1", "indicator--1", _ts(5), _ts(4))])
        store.commit()
        keys = [v.vkey for v in t.version_keys("c1", ["indicator--1", "indicator--9"])]
        assert keys == [_ts(1), _ts(2), _ts(5)]

        def versions(f: ObjectFilter) -> list[str]:
            return [o.version for o in t.page("c1", f, reader="r", limit=9)]

        assert versions(ObjectFilter(object_id="indicator--1")) == [_ts(5)]  # last by default
        assert versions(ObjectFilter(object_id="indicator--1", versions=("first",))) == [_ts(1)]
        assert versions(ObjectFilter(object_id="indicator--1", versions=("first", "last"))) == [_ts(1), _ts(5)]
        assert len(versions(ObjectFilter(object_id="indicator--1", versions=("all",)))) == 3
        assert versions(ObjectFilter(object_id="indicator--1", versions=(_ts(2),))) == [_ts(2)]
        assert t.delete_versions("c1", "indicator--1", ObjectFilter(versions=("last",))) == [_ts(5)]
        store.commit()
        assert versions(ObjectFilter(object_id="indicator--1")) == [_ts(2)]  # the new last
        assert t.delete_versions("c1", "indicator--1", ObjectFilter(versions=("all",), spec_versions=("2.0",))) == []
        assert t.delete_versions("c1", "indicator--1", ObjectFilter(versions=("all",))) == [_ts(1), _ts(2)]
        store.commit()
        assert not t.object_visible("c1", "indicator--1", reader="r")


def test_audiences_hide_red_objects_from_everyone_else(db_url: str) -> None:
    with open_store(db_url) as store:
        t = store.taxii
        t.add_objects(
            [
                _new("c1", "indicator--1", _ts(1), _ts(1)),
                _new("c1", "indicator--2", _ts(2), _ts(2), aud=("alice", "b_b")),
                _new("c1", "indicator--3", _ts(3), _ts(3), aud=()),  # nobody
            ]
        )
        store.commit()

        def seen(reader: str) -> list[str]:
            return [o.stix_id for o in t.page("c1", ObjectFilter(), reader=reader, limit=9)]

        assert seen("alice") == ["indicator--1", "indicator--2"]
        assert seen("b_b") == ["indicator--1", "indicator--2"]
        assert seen("bxb") == ["indicator--1"]  # LIKE wildcards in names are escaped
        assert seen("%") == ["indicator--1"]
        assert not t.object_visible("c1", "indicator--3", reader="alice")
        assert t.object_visible("c1", "indicator--2", reader="alice")
    assert encode_audience(None) is None and encode_audience([]) == "||" and encode_audience(["b", "a", "b"]) == "|a|b|"


def test_status_round_trip(db_url: str) -> None:
    with open_store(db_url) as store:
        s = StatusRow("s1", "api1", "partner", "complete", _ts(1), 2, 2, 0, 0, [{"id": "x", "version": "v"}], [], [])
        store.taxii.add_status(s)
        store.commit()
        assert store.taxii.status("api1", "s1") == s
        assert store.taxii.status("api2", "s1") is None and store.taxii.status("api1", "s2") is None
