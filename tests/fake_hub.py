"""A recorded fake of the Hugging Face Hub at the network edge only: uploads, and downloads of model repos.

huggingface_hub builds its real requests (create repo, preupload, commit;
paths-info, repo info, tree, resolve) and sends them through an ``httpx2``
transport; this transport answers the way the Hub does and keeps every request,
so a test sees exactly what would have left the machine (an Authorization
header, a weight file asked for).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote

import httpx2

_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_API_MODEL = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<what>revision|tree|paths-info)/(?P<rev>[^/]+)(/.*)?$")


@dataclass
class FakeRepo:
    files: dict[str, bytes]
    private: bool = False  # anonymous requests hear 401 RepoNotFound, as from the Hub
    gated: bool = False  # anonymous requests hear 401 GatedRepo
    sizes: dict[str, int] = field(default_factory=dict)  # sizes the metadata claims (an oversize file, cheaply)

    @property
    def sha(self) -> str:
        return hashlib.sha1(json.dumps(sorted((k, len(v)) for k, v in self.files.items())).encode()).hexdigest()

    def entry(self, name: str) -> dict:
        data = self.files[name]
        return {"type": "file", "path": name, "size": self.sizes.get(name, len(data)),
                "oid": hashlib.sha1(data).hexdigest()}


@dataclass
class FakeHub:
    fail_commit_with: str | None = None  # an error text the "Hub" answers the commit with
    requests: list[httpx2.Request] = field(default_factory=list)
    uploaded: dict[str, bytes] = field(default_factory=dict)
    repos: dict[str, FakeRepo] = field(default_factory=dict)  # model repos that can be downloaded

    def add_model(self, repo_id: str, folder, **options) -> FakeRepo:
        """Serve the files of a local model folder as the Hub repo ``repo_id``."""
        from pathlib import Path

        repo = self.repos[repo_id] = FakeRepo({p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()},
                                              **options)
        return repo

    def authorized(self) -> list[httpx2.Request]:
        """The requests that carried a token."""
        return [r for r in self.requests if "authorization" in {k.lower() for k in r.headers}]

    def fetched(self, name: str) -> list[httpx2.Request]:
        """The requests for the bytes (or the metadata, HEAD) of file ``name``."""
        return [r for r in self.requests if (m := _RESOLVE.match(r.url.path)) and unquote(m["file"]) == name]

    def _download(self, request: httpx2.Request, repo_id: str, what: str, rev: str, file: str | None):
        repo = self.repos.get(repo_id)
        if repo is None:
            return httpx2.Response(401, headers={"X-Error-Code": "RepoNotFound",
                                                 "X-Error-Message": "Repository not found"}, json={"error": "Repository not found"})
        if "authorization" not in {k.lower() for k in request.headers}:
            if repo.gated:
                message = (f"Access to model {repo_id} is restricted. You must have access to it and be "
                           f"authenticated to access it. Please log in.")
                return httpx2.Response(401, headers={"X-Error-Code": "GatedRepo", "X-Error-Message": message},
                                       json={"error": message})
            if repo.private:
                return httpx2.Response(401, headers={"X-Error-Code": "RepoNotFound",
                                                     "X-Error-Message": "Invalid username or password."},
                                       json={"error": "Invalid username or password."})
        if what == "paths-info":
            wanted = parse_qs(request.content.decode()).get("paths", [])
            return httpx2.Response(200, json=[repo.entry(n) for n in wanted if n in repo.files])
        if what == "revision":
            return httpx2.Response(200, json={"id": repo_id, "modelId": repo_id, "sha": repo.sha, "private": repo.private,
                                              "siblings": [{"rfilename": n} for n in repo.files]})
        if what == "tree":
            return httpx2.Response(200, json=[repo.entry(n) for n in repo.files])
        if file not in repo.files:
            return httpx2.Response(404, headers={"X-Error-Code": "EntryNotFound"}, json={"error": "Entry not found"})
        data = repo.files[file]
        headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                   "Content-Length": str(len(data))}
        return httpx2.Response(200, headers=headers, content=b"" if request.method == "HEAD" else data)

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        path = request.url.path
        if m := _API_MODEL.match(path):
            return self._download(request, m["repo"], m["what"], m["rev"], None)
        if m := _RESOLVE.match(path):
            return self._download(request, m["repo"], "resolve", m["rev"], unquote(m["file"]))
        if path == "/api/repos/create":
            body = json.loads(request.content)
            name = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
            return httpx2.Response(200, json={"url": f"https://huggingface.co/{name}", "name": name})
        if path == "/api/validate-yaml":  # the Hub checks the model card's metadata before a commit
            return httpx2.Response(200, json={})
        if "/preupload/" in path:
            files = json.loads(request.content)["files"]
            return httpx2.Response(
                200, json={"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
            )
        if "/commit/" in path:
            if self.fail_commit_with:
                return httpx2.Response(403, json={"error": self.fail_commit_with})
            for line in request.read().decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    self.uploaded[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            repo = path.split("/api/models/")[1].split("/commit/")[0]
            return httpx2.Response(
                200,
                json={"commitUrl": f"https://huggingface.co/{repo}/commit/{'0' * 40}", "commitOid": "0" * 40,
                      "commitMessage": "upload", "pullRequestUrl": None},
            )
        return httpx2.Response(404, json={"error": f"the fake Hub has no {request.method} {path}"})

    def install(self, monkeypatch) -> None:
        import huggingface_hub
        from huggingface_hub.utils._http import hf_request_event_hook

        huggingface_hub.close_session()
        huggingface_hub.set_client_factory(
            lambda: httpx2.Client(
                transport=httpx2.MockTransport(self.handle),
                event_hooks={"request": [hf_request_event_hook]},
                follow_redirects=True,
            )
        )
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    @staticmethod
    def uninstall() -> None:
        import huggingface_hub
        from huggingface_hub.utils._http import default_client_factory

        huggingface_hub.close_session()
        huggingface_hub.set_client_factory(default_client_factory)
