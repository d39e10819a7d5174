"""The users file: argon2id hashes, atomic private writes, verification and rehashing."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from admin_gateway.auth.users import USERS_FILE, UserError, UserFileCorrupt, UserStore

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PW = "twelve chars ok"


@pytest.fixture
def store(tmp_path: Path) -> UserStore:
    """A store with cheap hashing parameters (these tests are about the file, not argon2's cost)."""
    return UserStore(tmp_path / "gw", hasher=FAST)


class TestUserStore:
    def test_add_writes_a_private_file_with_argon2id(self, store: UserStore) -> None:
        """Users are stored in a 0600 file with argon2id hashes, never the password."""
        store.add("alice", "super_admin", PW)
        raw = store.path.read_text()
        assert PW not in raw
        entry = json.loads(raw)["users"][0]
        assert entry["hash"].startswith("$argon2id$")
        assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
        assert stat.S_IMODE(store.data_dir.stat().st_mode) == 0o700
        assert [p.name for p in store.data_dir.iterdir() if p.name.startswith(".users-")] == []

    @pytest.mark.parametrize("password", ["", "short", "x" * 11, "y" * 1025])
    def test_password_length_is_enforced(self, store: UserStore, password: str) -> None:
        """Passwords must be 12 to 1024 characters."""
        with pytest.raises(UserError):
            store.add("alice", "admin", password)
        assert store.list_users() == []

    @pytest.mark.parametrize("name", ["", " alice", "al ice", "-x", "a" * 65, "ali\nce", "é"])
    def test_bad_names_are_refused(self, store: UserStore, name: str) -> None:
        """User names are 1-64 safe characters."""
        with pytest.raises(UserError):
            store.add(name, "admin", PW)

    def test_verify(self, store: UserStore) -> None:
        """verify returns the user for the right password only; unknown users get None too."""
        store.add("alice", "super_admin", PW)
        assert store.verify("alice", PW) is not None
        assert store.verify("alice", PW + "x") is None
        assert store.verify("bob", PW) is None
        assert store.verify("bad name", PW) is None
        assert store.verify("alice", "z" * 5000) is None

    def test_set_password_bumps_the_generation(self, store: UserStore) -> None:
        """A password change increments the generation (which ends old sessions)."""
        first = store.add("alice", "super_admin", PW)
        second = store.set_password("alice", "another password")
        assert second.generation == first.generation + 1
        assert store.verify("alice", PW) is None

    def test_rehash_when_parameters_change(self, store: UserStore) -> None:
        """A correct password hashed with other parameters is rehashed with the store's own."""
        store.add("alice", "super_admin", PW)
        stronger = UserStore(store.data_dir, hasher=PasswordHasher(time_cost=2, memory_cost=16, parallelism=1))
        old = stronger.get("alice")
        assert old is not None and "t=1" in old.password_hash
        stronger.verify("alice", PW)
        new = stronger.get("alice")
        assert new is not None and "t=2" in new.password_hash and new.generation == old.generation

    def test_changes_by_another_process_are_seen(self, store: UserStore) -> None:
        """A running store notices the file changed (the CLI writes it) without a restart."""
        store.add("alice", "super_admin", PW)
        assert store.get("bob") is None
        UserStore(store.data_dir, hasher=FAST).add("bob", "admin", PW)
        assert store.get("bob") is None  # within the re-check delay the cached view is used
        store.recheck = 0.0
        assert store.get("bob") is not None

    def test_concurrent_writers_lose_nothing(self, store: UserStore) -> None:
        """Writers from several threads each add their user; the lock keeps every one."""
        names = [f"user{i}" for i in range(12)]
        threads = [
            threading.Thread(target=UserStore(store.data_dir, hasher=FAST).add, args=(n, "admin", PW)) for n in names
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(u.name for u in store.list_users()) == sorted(names)

    def test_corrupt_file_is_reported(self, store: UserStore) -> None:
        """A damaged users file is an explicit error, not an empty user list."""
        store.data_dir.mkdir(parents=True)
        (store.data_dir / USERS_FILE).write_text("{nope")
        with pytest.raises(UserFileCorrupt):
            store.list_users()

    def test_ensure_admin_only_on_an_empty_store(self, store: UserStore) -> None:
        """ensure_admin creates a super_admin once and only when there are no users."""
        password = store.ensure_admin()
        assert password and store.verify("admin", password) is not None
        assert store.ensure_admin() is None
        assert len(store.list_users()) == 1

    def test_failed_write_leaves_the_old_file(self, store: UserStore, monkeypatch: pytest.MonkeyPatch) -> None:
        """If replacing the file fails, the previous file is intact and no temporary file is left."""
        store.add("alice", "super_admin", PW)
        before = store.path.read_text()

        def broken(src: str, dst: str) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "replace", broken)
        with pytest.raises(OSError, match="No space left"):
            store.add("bob", "admin", PW)
        assert store.path.read_text() == before
        assert [p.name for p in store.data_dir.iterdir() if p.name.startswith(".users-")] == []


class TestReservedAndLookAlikeNames:
    @pytest.mark.parametrize(
        "name", ["system", "System", "SYSTEM", "sysTem", "\uff53ystem", "\u0455ystem", "syst\u0435m", "ｓｙｓｔｅｍ"]
    )
    def test_system_is_reserved_in_any_spelling(self, store: UserStore, name: str) -> None:
        """``system`` (the engine's own actor) is refused in any case, full-width or look-alike spelling."""
        with pytest.raises(UserError):
            store.add(name, "admin", PW)
        with pytest.raises(UserError):
            store.ensure_admin(name)
        assert store.list_users() == []

    @pytest.mark.parametrize(
        ("existing", "name"),
        [
            ("alice", "Alice"),
            ("alice", "ALICE"),
            ("bob0", "bobO"),
            ("ops1", "opsl"),
            ("ops1", "opsI"),
            ("mary", "rnary"),
            ("Dave", "dave"),
            ("neo", "ne0"),
        ],
    )
    def test_names_differing_only_in_look_alikes_are_refused(self, store: UserStore, existing: str, name: str) -> None:
        """A second user whose name differs from an existing one only in case or confusable characters is refused."""
        store.add(existing, "admin", PW)
        with pytest.raises(UserError, match="too like the existing user"):
            store.add(name, "super_admin", PW)
        assert [u.name for u in store.list_users()] == [existing]

    @pytest.mark.parametrize("name", ["alice", "systems", "sys-tem", "ali", "il", "li"])
    def test_distinct_names_are_accepted(self, store: UserStore, name: str) -> None:
        """Names that merely resemble each other but read differently stay allowed."""
        store.add("alicia", "admin", PW)
        store.add(name, "admin", PW)
        assert name in {u.name for u in store.list_users()}

    def test_existing_look_alike_users_still_load(self, store: UserStore) -> None:
        """A users file written before the rule (``system``, ``Alice`` beside ``alice``) still loads and verifies."""
        store.add("alice", "admin", PW)
        raw = json.loads(store.path.read_text())
        entry = raw["users"][0]
        raw["users"] += [{**entry, "name": "Alice"}, {**entry, "name": "system"}]
        store.path.write_text(json.dumps(raw))
        store.recheck = 0
        assert sorted(store.load()) == ["Alice", "alice", "system"]
        assert store.verify("system", PW) is not None
