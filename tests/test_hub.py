"""Fetching from the Hub: whose token goes out, and what size of weights is refused, seen at the network edge."""

from __future__ import annotations

import pytest

from resnet_hub import load
from resnet_hub.errors import SourceError, WeightsNotFoundError
from resnet_hub.hub import MAX_WEIGHTS_BYTES, HubAccess, access, resolve
from resnet_hub.layouts import CONFIG_NAME, WEIGHTS_NAME

OWNER_TOKEN = "hf_the_space_owners_secret_token"
ANONYMOUS = HubAccess(token=False, max_weights_bytes=MAX_WEIGHTS_BYTES, login_hint="log in with Hugging Face here")


@pytest.fixture
def hub(fake_hub, monkeypatch, tmp_path):
    """The fake Hub, an empty download cache, and the process's own token set (as a Space that pushes has)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_TOKEN", OWNER_TOKEN)
    return fake_hub


def test_an_anonymous_fetch_sends_no_token_even_with_hf_token_set(hub, saved_models):
    hub.add_model("someone/public-resnet", saved_models["resnet18"])
    with access(ANONYMOUS):
        model = load("someone/public-resnet", device="cpu")
    assert model.config.architecture == "resnet18"
    assert hub.fetched(WEIGHTS_NAME), "the weights were downloaded through the fake"
    assert hub.authorized() == []


def test_a_private_repo_is_not_fetched_with_the_process_token(hub, saved_models):
    hub.add_model("owner/private-resnet", saved_models["resnet18"], private=True)
    with access(ANONYMOUS), pytest.raises(WeightsNotFoundError) as refused:
        load("owner/private-resnet", device="cpu")
    message = str(refused.value)
    assert "not found on the Hub, or it is private" in message and "Invalid username or password." in message
    assert "log in with Hugging Face here" in message
    assert hub.requests and hub.authorized() == [] and hub.fetched(WEIGHTS_NAME) == []


def test_a_gated_repo_says_what_the_hub_said_and_to_request_access(hub, saved_models):
    hub.add_model("org/gated-resnet", saved_models["resnet18"], gated=True)
    with access(ANONYMOUS), pytest.raises(SourceError) as refused:
        resolve("org/gated-resnet")
    message = str(refused.value)
    assert "is gated" in message and "Access to model org/gated-resnet is restricted" in message
    assert "Request access on https://huggingface.co/org/gated-resnet" in message
    assert hub.authorized() == []


def test_a_visitors_own_token_is_the_one_sent(hub, saved_models):
    hub.add_model("visitor/private-resnet", saved_models["resnet18"], private=True)
    with access(HubAccess(token="hf_visitor_oauth", max_weights_bytes=MAX_WEIGHTS_BYTES)):
        load("visitor/private-resnet", device="cpu")
    sent = {r.headers["authorization"] for r in hub.authorized()}
    assert sent == {"Bearer hf_visitor_oauth"}


def test_oversize_weights_are_refused_before_any_weight_byte_is_requested(hub, saved_models):
    hub.add_model("someone/huge-resnet", saved_models["resnet18"], sizes={WEIGHTS_NAME: 2 * MAX_WEIGHTS_BYTES})
    with access(ANONYMOUS), pytest.raises(SourceError) as refused:
        load("someone/huge-resnet", device="cpu")
    assert "1,000 MB, over this app's limit of 500 MB" in str(refused.value)
    assert hub.fetched(WEIGHTS_NAME) == [] and hub.fetched(CONFIG_NAME) == []
    assert any("/paths-info/" in r.url.path for r in hub.requests)


def test_the_library_keeps_huggingface_hubs_own_token(hub, saved_models):
    hub.add_model("me/my-private-resnet", saved_models["resnet18"], private=True)
    load("me/my-private-resnet", device="cpu")  # a library user's own login reaches their own repo
    assert {r.headers["authorization"] for r in hub.authorized()} == {f"Bearer {OWNER_TOKEN}"}


def test_every_image_this_project_opens_is_opened_with_the_accepted_formats_only():
    """Pillow 12's decoders have known flaws that 13 fixes, and gradio 6.31 pins pillow<13: until the pin
    moves, every Image.open names the formats it accepts, so no other decoder ever sees visitor bytes."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    unrestricted = []
    for path in [root / "app.py", *sorted((root / "resnet_hub").rglob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "open"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in ("Image", "PIL")
                    and not any(k.arg == "formats" for k in node.keywords)):
                unrestricted.append(f"{path.relative_to(root)}:{node.lineno}")
    assert unrestricted == []


def test_offline_an_anonymous_fetch_is_not_served_from_a_cache_someone_elses_token_filled(hub_cache, saved_models):
    hub_cache.add_folder("owner/private-resnet", saved_models["resnet18"])  # what the owner's own login left
    with access(ANONYMOUS), pytest.raises(WeightsNotFoundError, match="cannot be reached to confirm that it is public"):
        resolve("owner/private-resnet")
    hub_cache.add_folder("timm/resnet18.a1_in1k", saved_models["resnet18"])
    with access(ANONYMOUS):
        assert resolve("resnet18").is_dir()  # the public defaults still serve from the cache
    assert resolve("owner/private-resnet").is_dir()  # and the library's own user still reads their cache
