"""A real PACS for the tests: Orthanc from the OS packages, on loopback, in a temporary folder."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def require_tools() -> None:
    """Skip, in one line, where the PACS or the IOD checker is missing."""
    missing = [tool for tool in ("Orthanc", "dciodvfy") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (apt-get install orthanc orthanc-dicomweb dicom3tools)")


def dciodvfy(path: Path) -> list[str]:
    """The reference checker's errors for ``path`` (warnings printed, not returned)."""
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = (out.stdout + out.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    print(f"dciodvfy {path.name}: {sum('Warning' in x for x in lines)} warnings, {len(errors)} errors")
    return errors


class Orthanc:
    """``start``, ``stop`` (a PACS that goes down) and ``start`` again on the same ports and storage."""

    AET = "ORTHANC"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.dicom_port, self.http_port = free_port(), free_port()
        self.process: subprocess.Popen | None = None
        config = {
            "Name": "dgla-tests",
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.AET,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAlwaysAllowStore": True,
            "DicomCheckCalledAet": False,
            "Plugins": [str(DICOMWEB_PLUGIN)] if DICOMWEB_PLUGIN.exists() else [],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        self.config = folder / "orthanc.json"
        self.config.write_text(json.dumps(config))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def send_to(self) -> str:
        return f"{self.AET}@127.0.0.1:{self.dicom_port}"

    def start(self, timeout: float = 60) -> None:
        log = open(self.folder / "orthanc.log", "ab")  # noqa: SIM115 (the process holds it)
        self.process = subprocess.Popen(["Orthanc", str(self.config)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.get("/system")
                return
            except OSError:
                assert self.process.poll() is None, (self.folder / "orthanc.log").read_text()[-2000:]
                time.sleep(0.2)
        raise TimeoutError(f"Orthanc did not answer within {timeout} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def get(self, path: str) -> object:
        with urllib.request.urlopen(self.url + path, timeout=10) as answer:
            return json.loads(answer.read())

    def file(self, instance: str) -> bytes:
        with urllib.request.urlopen(f"{self.url}/instances/{instance}/file", timeout=10) as answer:
            return answer.read()

    def study(self, study_uid: str) -> list[str]:
        """The Orthanc IDs of the instances of ``study_uid`` (one query, however full the PACS)."""
        query = json.dumps({"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}}).encode()
        request = urllib.request.Request(self.url + "/tools/find", data=query, method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())
