"""A recorded fake of the Hugging Face Hub's upload endpoints, at the network edge only.

huggingface_hub builds its real requests (create repo, preupload, commit) and
sends them through an ``httpx2`` transport; this transport answers the way the
Hub does and keeps every request, so a test sees exactly what would have left
the machine.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

import httpx2


@dataclass
class FakeHub:
    fail_commit_with: str | None = None  # an error text the "Hub" answers the commit with
    requests: list[httpx2.Request] = field(default_factory=list)
    uploaded: dict[str, bytes] = field(default_factory=dict)

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        path = request.url.path
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
