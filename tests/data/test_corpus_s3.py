"""S3 corpora against a real S3-compatible server (moto's server) on loopback."""

from __future__ import annotations

import io
import json
import socket

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scaling.data.corpus import CorpusSpec, load_corpus
from scaling.errors import UserInputError

from .conftest import SAMPLE_TEXT

BUCKET = "mcscale-corpus"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    client.put_object(Bucket=BUCKET, Key="text/notes.txt", Body=SAMPLE_TEXT.encode())
    client.put_object(Bucket=BUCKET, Key="text/more.md", Body=b"more text " * 30)
    records = [{"text": f"remote document {i} " * 5, "id": i} for i in range(20)]
    client.put_object(Bucket=BUCKET, Key="jsonl/docs.jsonl",
                      Body="\n".join(json.dumps(r) for r in records).encode())
    buf = io.BytesIO()
    pq.write_table(pa.table({"content": [r["text"] for r in records]}), buf)
    client.put_object(Bucket=BUCKET, Key="parquet/part-0.parquet", Body=buf.getvalue())
    tokens = (np.arange(4000) % 251).astype(np.uint16)
    client.put_object(Bucket=BUCKET, Key="tokens/shard.bin", Body=tokens.tobytes())
    client.put_object(Bucket=BUCKET, Key="tokens/bad.bin", Body=tokens.tobytes()[:-1])
    for name, part in [("train_000.npy", tokens[:1500]), ("train_001.npy", tokens[1500:3500]),
                       ("val_000.npy", tokens[3500:])]:
        buf = io.BytesIO()
        np.save(buf, part.astype(np.int32))
        client.put_object(Bucket=BUCKET, Key=f"named/{name}", Body=buf.getvalue())
    yield {"endpoint": endpoint, "records": records, "tokens": tokens}
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    return s3_server


def joined(corpus) -> bytes:
    return np.concatenate([np.asarray(corpus.train), np.asarray(corpus.val)]).astype(np.uint8).tobytes()


def test_s3_text_file(s3_env):
    corpus = load_corpus(CorpusSpec(source=f"s3://{BUCKET}/text/notes.txt", s3_endpoint=s3_env["endpoint"]))
    assert joined(corpus) == SAMPLE_TEXT.encode()
    assert f"s3://{BUCKET}/text/notes.txt" in corpus.description


def test_s3_prefix_and_glob(s3_env):
    folder = load_corpus(CorpusSpec(source=f"s3://{BUCKET}/text", s3_endpoint=s3_env["endpoint"]))
    assert joined(folder) == b"more text " * 30 + b"\n\n" + SAMPLE_TEXT.encode()  # sorted keys: more.md, notes.txt
    globbed = load_corpus(CorpusSpec(source=f"s3://{BUCKET}/text/*.md", s3_endpoint=s3_env["endpoint"]))
    assert joined(globbed) == b"more text " * 30


def test_s3_jsonl_with_endpoint_from_env(s3_env, monkeypatch):
    monkeypatch.setenv("MCSCALE_S3_ENDPOINT", s3_env["endpoint"])
    corpus = load_corpus(CorpusSpec(source=f"s3://{BUCKET}/jsonl/docs.jsonl"))
    assert joined(corpus) == "\n\n".join(r["text"] for r in s3_env["records"]).encode()


def test_s3_parquet(s3_env):
    corpus = load_corpus(CorpusSpec(source=f"s3://{BUCKET}/parquet/part-0.parquet", text_field="content",
                                    s3_endpoint=s3_env["endpoint"]))
    assert joined(corpus) == "\n\n".join(r["text"] for r in s3_env["records"]).encode()


def test_s3_token_shard_is_downloaded_and_memory_mapped(s3_env):
    spec = CorpusSpec(source=f"s3://{BUCKET}/tokens/shard.bin", s3_endpoint=s3_env["endpoint"])
    corpus = load_corpus(spec)
    assert isinstance(corpus.train, np.memmap)
    assert np.array_equal(np.concatenate([corpus.train, corpus.val]), s3_env["tokens"])


def test_s3_token_shard_without_cache(s3_env, monkeypatch):
    monkeypatch.setenv("MCSCALE_CACHE", "off")
    corpus = load_corpus(CorpusSpec(source=f"s3://{BUCKET}/tokens/shard.bin", s3_endpoint=s3_env["endpoint"]))
    assert np.array_equal(np.concatenate([corpus.train, corpus.val]), s3_env["tokens"])


@pytest.mark.parametrize("cache", ["on", "off"])
def test_s3_named_shards_split_by_name(s3_env, monkeypatch, cache):
    if cache == "off":
        monkeypatch.setenv("MCSCALE_CACHE", "off")
    corpus = load_corpus(CorpusSpec(source=f"s3://{BUCKET}/named/*.npy", s3_endpoint=s3_env["endpoint"]))
    assert np.array_equal(corpus.train, s3_env["tokens"][:3500]) and np.array_equal(corpus.val, s3_env["tokens"][3500:])
    assert isinstance(corpus.train, np.memmap) == (cache == "on")


@pytest.mark.parametrize("source, field", [
    (f"s3://{BUCKET}/text/missing.txt", "corpus.source"),
    (f"s3://{BUCKET}/nothing/*.txt", "corpus.source"),
    ("s3://no-such-bucket/x.txt", "corpus.source"),
    (f"s3://{BUCKET}/tokens/bad.bin", "corpus.source"),
])
def test_s3_errors(s3_env, source, field):
    with pytest.raises(UserInputError) as err:
        load_corpus(CorpusSpec(source=source, s3_endpoint=s3_env["endpoint"]))
    assert err.value.field == field


def test_s3_jsonl_without_field(s3_env):
    with pytest.raises(UserInputError) as err:
        load_corpus(CorpusSpec(source=f"s3://{BUCKET}/jsonl/docs.jsonl", text_field="body",
                               s3_endpoint=s3_env["endpoint"]))
    assert err.value.field == "corpus.text_field"


def test_unreachable_endpoint(s3_env):
    with pytest.raises(UserInputError) as err:
        load_corpus(CorpusSpec(source=f"s3://{BUCKET}/text/notes.txt", s3_endpoint=f"http://127.0.0.1:{free_port()}"))
    assert err.value.field == "corpus.source" and "endpoint" in err.value.fix


def test_bad_endpoint():
    with pytest.raises(UserInputError) as err:
        load_corpus(CorpusSpec(source=f"s3://{BUCKET}/text/notes.txt", s3_endpoint="ftp://127.0.0.1:1"))
    assert err.value.field == "corpus.s3_endpoint"
