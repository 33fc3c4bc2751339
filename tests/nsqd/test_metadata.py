"""nsqd.dat: Go's exact bytes, atomic writes, lenient-but-fatal loading, and the persister."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from twisted_nsq.nsqd.metadata import (
    ChannelMetadata,
    Metadata,
    MetadataError,
    MetadataPersister,
    TopicMetadata,
    decode_metadata,
    encode_metadata,
    load_metadata,
    save_metadata,
    snapshot,
)
from twisted_nsq.nsqd.nsqd import NSQD
from twisted_nsq.testing import make_nsqd

#: What Go nsqd 1.3.0 writes for the topology built by ``_populate`` (spec 2.6).
GOLDEN = (
    b'{"topics":[{"name":"t1","paused":false,"channels":[{"name":"ch1","paused":false},'
    b'{"name":"idle","paused":true}]},{"name":"t2","paused":false,"channels":null},'
    b'{"name":"held","paused":true,"channels":[{"name":"c","paused":false}]}],"version":"1.3.0"}'
)


def _populate(nsqd: NSQD) -> None:
    t1 = nsqd.get_topic("t1")
    t1.get_channel("ch1")
    t1.get_channel("idle").pause()
    t1.get_channel("tmp#ephemeral")
    nsqd.get_topic("t2")
    nsqd.get_topic("e#ephemeral").get_channel("c")
    held = nsqd.get_topic("held")
    held.get_channel("c")
    held.pause()


class EncodingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.data_path = self.mktemp()
        os.makedirs(self.data_path)
        self.nsqd = make_nsqd(Clock(), data_path=self.data_path)

    def read(self) -> bytes:
        with open(os.path.join(self.data_path, "nsqd.dat"), "rb") as f:
            return f.read()

    def test_golden_bytes(self) -> None:
        """Go's key order, compact, no newline, null for no channels, ephemeral ones left out."""
        _populate(self.nsqd)
        save_metadata(self.data_path, self.nsqd)
        self.assertEqual(self.read(), GOLDEN)

    def test_no_topics_is_null(self) -> None:
        save_metadata(self.data_path, self.nsqd)
        self.assertEqual(self.read(), b'{"topics":null,"version":"1.3.0"}')

    def test_only_ephemeral(self) -> None:
        self.nsqd.get_topic("a#ephemeral").get_channel("b#ephemeral")
        self.nsqd.get_topic("t").get_channel("only#ephemeral")
        save_metadata(self.data_path, self.nsqd)
        self.assertEqual(
            self.read(), b'{"topics":[{"name":"t","paused":false,"channels":null}],"version":"1.3.0"}'
        )

    def test_round_trip(self) -> None:
        _populate(self.nsqd)
        save_metadata(self.data_path, self.nsqd)
        loaded = load_metadata(self.data_path)
        self.assertEqual(loaded, snapshot(self.nsqd))
        self.assertEqual(
            loaded,
            Metadata(
                (
                    TopicMetadata("t1", False, (ChannelMetadata("ch1"), ChannelMetadata("idle", True))),
                    TopicMetadata("t2"),
                    TopicMetadata("held", True, (ChannelMetadata("c"),)),
                ),
                "1.3.0",
            ),
        )
        assert loaded is not None
        self.assertEqual(encode_metadata(loaded), GOLDEN)

    def test_load_into_fresh_nsqd(self) -> None:
        """A second core built from the file has the same topics, channels and paused flags."""
        _populate(self.nsqd)
        save_metadata(self.data_path, self.nsqd)
        loaded = load_metadata(self.data_path)
        assert loaded is not None
        fresh = make_nsqd(Clock(), data_path=self.data_path)
        fresh.load_metadata(loaded)
        self.assertEqual(list(fresh.topics), ["t1", "t2", "held"])
        self.assertEqual(list(fresh.topics["t1"].channels), ["ch1", "idle"])
        self.assertEqual(
            [(c.name, c.paused) for c in fresh.topics["t1"].channels.values()],
            [("ch1", False), ("idle", True)],
        )
        self.assertEqual(
            {name: t.paused for name, t in fresh.topics.items()}, {"t1": False, "t2": False, "held": True}
        )
        self.assertEqual(snapshot(fresh), loaded)


class AtomicWriteTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.data_path = self.mktemp()
        os.makedirs(self.data_path)
        self.nsqd = make_nsqd(Clock(), data_path=self.data_path)
        self.path = os.path.join(self.data_path, "nsqd.dat")

    def test_mode_and_no_leftovers(self) -> None:
        self.nsqd.get_topic("t")
        save_metadata(self.data_path, self.nsqd)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode) & 0o077, 0)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode) & 0o600, 0o600)
        self.assertEqual(os.listdir(self.data_path), ["nsqd.dat"])

    def test_tmp_name_renamed_over(self) -> None:
        """The data goes to ``nsqd.dat.<random>.tmp`` first and is renamed over the old file."""
        renames: list[tuple[str, str]] = []
        real_replace = os.replace

        def replace(src: str, dst: str) -> None:
            renames.append((src, dst))
            with open(src, "rb") as f:
                self.assertEqual(json.loads(f.read())["topics"][0]["name"], "t")
            real_replace(src, dst)

        self.patch(os, "replace", replace)
        self.nsqd.get_topic("t")
        save_metadata(self.data_path, self.nsqd)
        [(src, dst)] = renames
        self.assertEqual(dst, self.path)
        name = os.path.basename(src)
        self.assertTrue(name.startswith("nsqd.dat.") and name.endswith(".tmp"), name)
        self.assertTrue(name[len("nsqd.dat.") : -len(".tmp")].isdigit(), name)

    def test_failed_write_keeps_old_file(self) -> None:
        """A crash (here: a failing fsync) before the rename leaves the old file whole, no tmp file."""
        self.nsqd.get_topic("old")
        save_metadata(self.data_path, self.nsqd)
        before = Path(self.path).read_bytes()

        def fsync(fd: int) -> None:
            raise OSError(28, "No space left on device")

        self.patch(os, "fsync", fsync)
        self.nsqd.get_topic("new")
        self.assertRaises(OSError, save_metadata, self.data_path, self.nsqd)
        self.assertEqual(Path(self.path).read_bytes(), before)
        self.assertEqual(os.listdir(self.data_path), ["nsqd.dat"])


class LoadingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.data_path = self.mktemp()
        os.makedirs(self.data_path)

    def write(self, data: bytes) -> None:
        with open(os.path.join(self.data_path, "nsqd.dat"), "wb") as f:
            f.write(data)

    def test_missing_is_none(self) -> None:
        self.assertIsNone(load_metadata(self.data_path))

    def test_parse_error_is_fatal(self) -> None:
        for data in (b"", b"{", b"not json", b'{"topics":[{"name":"t","paused":"yes"}]}', b"[]"):
            self.write(data)
            with self.assertRaises(MetadataError) as caught:
                load_metadata(self.data_path)
            message = str(caught.exception)
            self.assertTrue(
                message.startswith(
                    f"failed to load metadata - failed to parse metadata in {self.data_path}/nsqd.dat - "
                ),
                message,
            )

    def test_type_errors_name_go_fields(self) -> None:
        self.write(b'{"topics":[{"name":5}]}')
        with self.assertRaises(MetadataError) as caught:
            load_metadata(self.data_path)
        self.assertIn(
            "cannot unmarshal number into Go struct field TopicMetadata.topics.name", str(caught.exception)
        )

    def test_unreadable_is_fatal(self) -> None:
        os.makedirs(os.path.join(self.data_path, "nsqd.dat"))
        with self.assertRaises(MetadataError) as caught:
            load_metadata(self.data_path)
        self.assertIn("failed to load metadata - failed to read metadata from", str(caught.exception))

    def test_invalid_names_skipped_with_warning(self) -> None:
        document = {
            "topics": [
                {"name": "bad topic", "paused": False, "channels": [{"name": "c", "paused": False}]},
                {"name": "", "paused": False, "channels": None},
                {
                    "name": "good",
                    "paused": True,
                    "channels": [{"name": "ok", "paused": True}, {"name": "no/pe", "paused": False}],
                },
            ],
            "version": "1.2.1",
        }
        self.write(json.dumps(document).encode())
        with capturedLogs() as events:
            loaded = load_metadata(self.data_path)
        self.assertEqual(
            loaded, Metadata((TopicMetadata("good", True, (ChannelMetadata("ok", True),)),), "1.2.1")
        )
        self.assertEqual(
            [formatEvent(e) for e in events if e["log_level"].name == "warn"],
            [
                "skipping creation of invalid topic bad topic",
                "skipping creation of invalid topic ",
                "skipping creation of invalid channel no/pe",
            ],
        )

    def test_go_json_leniency(self) -> None:
        """Unknown keys ignored, keys matched regardless of case, null means the zero value."""
        data = (
            b'{"Topics":[{"NAME":"t","Paused":null,"channels":[{"name":"c","PAUSED":true,"x":1}]},'
            b'{"name":"u"}],"extra":{"a":[1]},"version":null}'
        )
        self.assertEqual(
            decode_metadata(data),
            Metadata((TopicMetadata("t", False, (ChannelMetadata("c", True),)), TopicMetadata("u")), ""),
        )
        self.assertEqual(decode_metadata(b"null"), Metadata((), ""))
        self.assertEqual(decode_metadata(b'{"topics":null}'), Metadata((), ""))

    def test_duplicate_topics_merge(self) -> None:
        """A topic listed twice is one topic with both lists of channels, paused if either says so."""
        self.write(
            b'{"topics":[{"name":"t","paused":true,"channels":[{"name":"a","paused":false}]},'
            b'{"name":"t","paused":false,"channels":[{"name":"b","paused":false}]}],"version":"1.3.0"}'
        )
        loaded = load_metadata(self.data_path)
        assert loaded is not None
        nsqd = make_nsqd(Clock(), data_path=self.data_path)
        nsqd.load_metadata(loaded)
        self.assertEqual(list(nsqd.topics["t"].channels), ["a", "b"])
        self.assertTrue(nsqd.topics["t"].paused)

    def test_load_does_not_drain_into_first_channel_only(self) -> None:
        """Every loaded channel exists before the topic hands on its backlog."""
        nsqd = make_nsqd(Clock(), data_path=self.data_path)
        nsqd.load_metadata(Metadata((TopicMetadata("t"),)))
        nsqd.topics["t"].publish([b"waiting"])
        nsqd.load_metadata(
            Metadata((TopicMetadata("t", False, (ChannelMetadata("a"), ChannelMetadata("b"))),))
        )
        topic = nsqd.topics["t"]
        self.assertFalse(topic.paused)
        self.assertEqual([c.depth() for c in topic.channels.values()], [1, 1])


class PersisterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.data_path = self.mktemp()
        os.makedirs(self.data_path)
        self.nsqd = make_nsqd(self.clock, data_path=self.data_path)
        self.persister = MetadataPersister(self.nsqd)
        self.persister.install()

    def names(self) -> list[str]:
        loaded = load_metadata(self.data_path)
        assert loaded is not None
        return [t.name for t in loaded.topics]

    def test_coalesced_per_turn(self) -> None:
        """Many changes in one reactor turn cost one write, made on the next turn."""
        for i in range(5):
            self.nsqd.get_topic(f"t{i}").get_channel("c")
        self.assertTrue(self.persister.pending)
        self.assertIsNone(load_metadata(self.data_path))
        self.clock.advance(0)
        self.assertEqual(self.persister.writes, 1)
        self.assertEqual(self.names(), [f"t{i}" for i in range(5)])
        self.clock.advance(0)
        self.assertEqual(self.persister.writes, 1)

    def test_every_change_is_written(self) -> None:
        topic = self.nsqd.get_topic("t")
        self.clock.advance(0)
        channel = topic.get_channel("c")
        self.clock.advance(0)
        channel.pause()
        self.nsqd.persist_metadata()
        self.clock.advance(0)
        loaded = load_metadata(self.data_path)
        self.assertEqual(loaded, Metadata((TopicMetadata("t", False, (ChannelMetadata("c", True),)),)))
        topic.delete_channel("c")
        self.clock.advance(0)
        self.assertEqual(load_metadata(self.data_path), Metadata((TopicMetadata("t"),)))
        self.nsqd.delete_topic("t")
        self.clock.advance(0)
        self.assertEqual(load_metadata(self.data_path), Metadata(()))
        self.assertEqual(self.persister.writes, 5)

    def test_ephemeral_changes_not_written(self) -> None:
        topic = self.nsqd.get_topic("e#ephemeral")
        topic.get_channel("c")
        self.nsqd.get_topic("t")
        self.clock.advance(0)
        writes = self.persister.writes
        self.nsqd.topics["t"].get_channel("c#ephemeral")
        self.nsqd.topics["t"].delete_channel("c#ephemeral")
        topic.delete_channel("c")
        self.assertFalse(self.persister.pending)
        self.clock.advance(0)
        self.assertEqual(self.persister.writes, writes)

    def test_uninstall_cancels(self) -> None:
        self.nsqd.get_topic("t")
        self.persister.uninstall()
        self.assertFalse(self.persister.pending)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.nsqd.get_topic("u")
        self.assertFalse(self.persister.pending)

    def test_write_error_sets_health(self) -> None:
        """A failed write is logged and shown by /ping; a later good write clears it."""
        os.rmdir(self.data_path)
        self.nsqd.get_topic("t")
        with capturedLogs() as events:
            self.clock.advance(0)
        self.assertFalse(self.nsqd.is_healthy())
        self.assertTrue(
            self.nsqd.health().startswith("NOK - failed to persist metadata - "), self.nsqd.health()
        )
        self.assertIn("No such file or directory", self.nsqd.health())
        self.assertEqual(
            [formatEvent(e) for e in events if e["log_level"].name == "error"],
            [self.nsqd.health()[len("NOK - ") :]],
        )
        os.makedirs(self.data_path)
        self.assertTrue(self.persister.write_now())
        self.assertTrue(self.nsqd.is_healthy())
        self.assertEqual(self.names(), ["t"])

    def test_recovery_keeps_other_errors(self) -> None:
        """A good write does not hide a disk queue's error reported since."""
        os.rmdir(self.data_path)
        self.assertFalse(self.persister.write_now())
        self.nsqd.set_health("write t.diskqueue.000000.dat: no space left on device")
        os.makedirs(self.data_path)
        self.assertTrue(self.persister.write_now())
        self.assertEqual(self.nsqd.health(), "NOK - write t.diskqueue.000000.dat: no space left on device")
