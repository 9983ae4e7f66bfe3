"""Downloading results: a CSV profile as JSON and CSV, a checksum as a ``.sha256``-style line."""

import csv
import hashlib
import io
import json
import subprocess

import pytest
from helpers import job_id_from, soup, submit, wait_for

from webapp.downloads import cell, upload_name
from webapp.store import Job

PEOPLE = b"name,age,note\nada,36,=1+2\ngrace,45,@home\nada,,-x\n"


def upload(client, kind: str, content: bytes, name: str, **data) -> str:
    response = submit(client, kind, {"file": (io.BytesIO(content), name), **data}, content_type="multipart/form-data")
    return job_id_from(response)


def test_csv_profile_downloads_as_json_and_csv(client, consumer):
    job_id = upload(client, "csv_profile", PEOPLE, "people.csv")
    result = wait_for(client, job_id, "succeeded")["result"]

    page = soup(client.get(f"/jobs/{job_id}"))
    links = {a.get_text(): a["href"] for a in page.select("#job-status .downloads a")}
    assert links == {"JSON": f"/jobs/{job_id}/download.json", "CSV": f"/jobs/{job_id}/download.csv"}

    as_json = client.get(links["JSON"])
    assert as_json.status_code == 200
    assert as_json.mimetype == "application/json"
    assert as_json.headers["Content-Disposition"] == "attachment; filename=people-profile.json"
    assert json.loads(as_json.get_data()) == result

    as_csv = client.get(links["CSV"])
    assert as_csv.status_code == 200
    assert as_csv.headers["Content-Type"] == "text/csv; charset=utf-8"  # one charset, not two
    assert as_csv.headers["Content-Disposition"] == "attachment; filename=people-profile.csv"
    rows = list(csv.DictReader(io.StringIO(as_csv.get_data(as_text=True))))
    assert [r["name"] for r in rows] == ["name", "age", "note"]
    age = rows[1]
    assert (age["type"], age["count"], age["empty"], age["min"], age["max"], age["mean"]) == (
        "integer",
        "2",
        "1",
        "36",
        "45",
        "40.5",
    )
    assert json.loads(rows[0]["top"]) == [["ada", 2], ["grace", 1]]
    # Text from the upload that a spreadsheet would run as a formula starts with a quote.
    assert rows[2]["min"].startswith("'") and rows[2]["max"].startswith("'")


def test_checksum_downloads_as_a_sha256sum_line(client, consumer, tmp_path):
    content = b"hello, world\n"
    job_id = upload(client, "checksum", content, "hello world.txt", algorithm="sha256")
    wait_for(client, job_id, "succeeded")
    link = soup(client.get(f"/jobs/{job_id}")).select_one("#job-status .downloads a")["href"]
    assert link == f"/jobs/{job_id}/download.sha256"

    response = client.get(link)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["Content-Disposition"] == "attachment; filename=hello_world.txt.sha256"
    line = response.get_data(as_text=True)
    assert line == f"{hashlib.sha256(content).hexdigest()}  hello world.txt\n"
    # sha256sum itself (coreutils, on every Debian) checks the file against the line.
    (tmp_path / "hello world.txt").write_bytes(content)
    (tmp_path / "check.sha256").write_text(line)
    check = subprocess.run(["sha256sum", "-c", "check.sha256"], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    assert client.get(f"/jobs/{job_id}/download.md5").status_code == 404
    assert client.get(f"/jobs/{job_id}/download.json").status_code == 404


@pytest.mark.parametrize("algorithm", ["md5", "blake2b"])
def test_checksum_extension_is_the_algorithm(client, consumer, algorithm):
    job_id = upload(client, "checksum", b"abc", "a.bin", algorithm=algorithm)
    wait_for(client, job_id, "succeeded")
    response = client.get(f"/jobs/{job_id}/download.{algorithm}")
    assert response.headers["Content-Disposition"] == f"attachment; filename=a.bin.{algorithm}"
    assert response.get_data(as_text=True) == f"{hashlib.new(algorithm, b'abc').hexdigest()}  a.bin\n"


def test_unsafe_and_non_ascii_file_names(client, consumer):
    job_id = upload(client, "csv_profile", PEOPLE, "/home/zoë/données été.csv")
    wait_for(client, job_id, "succeeded")
    disposition = client.get(f"/jobs/{job_id}/download.csv").headers["Content-Disposition"]
    assert disposition == "attachment; filename=donnees_ete-profile.csv"

    job_id = upload(client, "checksum", b"x", "../../etc/passwd", algorithm="sha1")
    wait_for(client, job_id, "succeeded")
    response = client.get(f"/jobs/{job_id}/download.sha1")
    assert response.headers["Content-Disposition"] == "attachment; filename=passwd.sha1"
    assert response.get_data(as_text=True).endswith("  passwd\n")


def test_not_succeeded_is_409_with_a_message(client):
    job_id = upload(client, "csv_profile", PEOPLE, "people.csv")  # no consumer: it stays queued
    response = client.get(f"/jobs/{job_id}/download.csv")
    assert response.status_code == 409
    assert "once it has succeeded" in soup(response).select_one(".error-message").get_text()
    response = client.get(f"/jobs/{job_id}/download.json", headers={"Accept": "application/json"})
    assert response.status_code == 409
    assert "queued" in response.get_json()["error"]


def test_failed_job_has_nothing_to_download(client, consumer):
    job_id = upload(client, "csv_profile", b"a,b\n1\n", "bad.csv")
    wait_for(client, job_id, "failed")
    assert client.get(f"/jobs/{job_id}/download.csv").status_code == 409
    assert soup(client.get(f"/jobs/{job_id}")).select_one(".downloads") is None


def test_kinds_without_downloads_and_unknown_formats_are_404(client):
    timer = job_id_from(submit(client, "timer", {"seconds": "5"}))
    for fmt in ("json", "csv", "sha256"):
        assert client.get(f"/jobs/{timer}/download.{fmt}").status_code == 404
    profile = upload(client, "csv_profile", PEOPLE, "people.csv")
    assert client.get(f"/jobs/{profile}/download.xlsx").status_code == 404


def test_upload_name_and_cell_units():
    job = Job(id="x", kind="checksum", owner="o", upload_name="a\nb.txt", upload_size=1)
    assert upload_name(job, safe=False) == "a_b.txt"  # a newline would break the checksum line
    assert upload_name(Job(id="x", kind="checksum", owner="o"), safe=True) == "upload"
    assert [cell(v) for v in (None, True, 3, -2.5, "-x", "=A1", "plain")] == [
        "",
        "true",
        3,
        -2.5,
        "'-x",
        "'=A1",
        "plain",
    ]
