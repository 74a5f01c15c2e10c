"""The embedded MongoDB-wire server's speed-up (server/secantus_tuning.py) changes how
fast it inserts, never what it stores or refuses: unique keys are still refused within
one batch and across batches, and an index built between two inserts holds the
documents of the second. It runs standalone, on the data dirs it wrote before."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pymongo
import pymongo.errors
import pytest

from server import secantus_tuning
from server.embedded import mongo_service, start_on_free_port
from tests.services import Services


@pytest.fixture
def messages(services: Services) -> Iterator[pymongo.collection.Collection]:
    client: pymongo.MongoClient = pymongo.MongoClient(services.mongo_url)
    db = client[f"tuning_{uuid.uuid4().hex[:10]}"]
    yield db.messages
    client.drop_database(db.name)
    client.close()


def test_the_installed_secantusdb_takes_the_tuning() -> None:
    # The embedded server runs it; if SecantusDB's internals change, this says so
    # (the server then runs untuned, and slower, rather than wrongly).
    pytest.importorskip("secantus")
    assert secantus_tuning.install()
    assert secantus_tuning.install()  # a second install changes nothing


def test_a_duplicate_key_within_one_batch_is_refused_where_it_is(
        messages: pymongo.collection.Collection) -> None:
    messages.create_index([("room", 1), ("seq", 1)], unique=True)
    messages.create_index("ckey", unique=True, sparse=True)
    messages.create_index("words", sparse=True)
    docs = [{"room": "r", "seq": 1, "ckey": "a", "words": ["x", "y"]},
            {"room": "r", "seq": 2},
            {"room": "r", "seq": 3, "ckey": "a"},  # the ckey of the first
            {"room": "r", "seq": 4}]
    with pytest.raises(pymongo.errors.BulkWriteError) as refused:
        messages.insert_many(docs, ordered=True)
    error = refused.value.details["writeErrors"][0]
    assert (error["index"], error["code"]) == (2, 11000)
    assert "ckey" in error["keyPattern"]
    assert sorted(d["seq"] for d in messages.find()) == [1, 2]
    with pytest.raises(pymongo.errors.BulkWriteError) as again:  # the next batch too
        messages.insert_many([{"room": "r", "seq": 2}], ordered=True)
    assert "seq" in again.value.details["writeErrors"][0]["keyPattern"]
    assert messages.count_documents({"words": "y"}) == 1


def test_an_index_built_between_two_inserts_holds_the_second(
        messages: pymongo.collection.Collection) -> None:
    messages.insert_many([{"room": "r", "seq": s, "tag": f"t{s}"} for s in range(1, 4)])
    messages.create_index("tag", unique=True, sparse=True)
    messages.insert_many([{"room": "r", "seq": s, "tag": f"t{s}"} for s in range(4, 7)])
    assert [d["seq"] for d in messages.find({"tag": "t5"}).hint("tag_1")] == [5]
    with pytest.raises(pymongo.errors.BulkWriteError):
        messages.insert_many([{"room": "r", "seq": 7, "tag": "t6"}])


def test_a_data_dir_of_the_replica_set_mode_server_opens_standalone_with_its_data(
        tmp_path: Path) -> None:
    # Data dirs of earlier versions were written by secantusd as a one-node replica set.
    earlier = start_on_free_port(lambda: mongo_service(tmp_path, tuned=False))
    try:
        with pymongo.MongoClient(earlier.url) as client:
            assert client.admin.command("hello").get("setName")
            client.chat.messages.create_index([("room", 1), ("seq", 1)], unique=True)
            client.chat.messages.insert_many([{"room": "r", "seq": s} for s in (1, 2)])
    finally:
        earlier.stop()
    now = start_on_free_port(lambda: mongo_service(tmp_path))
    try:
        with pymongo.MongoClient(now.url) as client:
            assert not client.admin.command("hello").get("setName")
            messages = client.chat.messages
            assert [d["seq"] for d in messages.find().sort("seq", 1)] == [1, 2]
            with pytest.raises(pymongo.errors.DuplicateKeyError):
                messages.insert_one({"room": "r", "seq": 2})
            messages.insert_one({"room": "r", "seq": 3})
            assert messages.count_documents({}) == 3
    finally:
        now.stop()
