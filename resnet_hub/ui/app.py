"""The whole app: the tabs composed on one page, what each page load fills in, and how it is launched.

>>> ctx = AppContext()              # doctest: +SKIP
>>> demo = create_app(ctx)          # builds the layout; starts nothing
>>> ctx.start()                     # the Hub check, the starters, the frozen parts
>>> demo.launch(**launch_options())
"""

from __future__ import annotations

import gradio as gr

from ..owners import Visitor, new_browser_id
from ..store import remove_expired
from .about import build_about_tab
from .classify import build_classify_tab
from .common import MAX_FILE_SIZE, PageParts, example_folders
from .compare import build_compare_tab
from .context import AppContext
from .finetune import build_finetune_tab
from .lab import build_lab_tab, lab_cached
from .workarounds import SSR_MODE, quiet_pandas_warnings

QUEUE_SIZE = 64
DEFAULT_CONCURRENCY = 16
BANNER_BEFORE_LOAD = "Checking which weights serve…"  # until the page's load event fills in the Hub check's answer


def create_app(ctx: AppContext | None = None) -> gr.Blocks:
    """The app's page for ``ctx`` (a new :class:`AppContext` when None), built from read-only inputs: no Hub call,
    no thread and no file written; what depends on the Hub check or the visitor is filled on each page load."""
    ctx = ctx or AppContext()
    quiet_pandas_warnings()
    parts = PageParts()
    with gr.Blocks(title="resnet-hub", delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# resnet-hub\nTry, compare and fine-tune ResNet-18 and ResNet-50.")
        banner = gr.Markdown(BANNER_BEFORE_LOAD, elem_id="weights-banner")
        banner_timer = gr.Timer(2.0, active=False)
        # Space mode: the browser keeps a random id (localStorage) that owns its models; each event reads it
        # from this session's state, filled on page load (State, unlike BrowserState, is no API parameter).
        browser_state = gr.BrowserState(None, storage_key="resnet-hub-visitor", secret=ctx.browser_secret)
        visitor_state = gr.State(None)

        build_classify_tab(ctx, visitor_state, parts)
        build_compare_tab(ctx, visitor_state, parts)
        build_finetune_tab(ctx, visitor_state, parts)
        lab_outputs = build_lab_tab(ctx, visitor_state)
        build_about_tab()

        def on_page_load(stored_id, request: gr.Request = None, profile: gr.OAuthProfile | None = None):
            """Banner, choosers and example captions for this visitor; in Space mode, this browser's id (made on its
            first visit)."""
            browser_id = stored_id if isinstance(stored_id, str) and Visitor.on_space(browser_id=stored_id).owners[0] \
                .startswith("browser-") else new_browser_id()
            if ctx.multi_user:
                remove_expired(ctx.retention_hours * 3600)
            visitor = ctx.visitor_of(browser_id, request, profile)
            return {banner: ctx.registry.banner, banner_timer: gr.Timer(active=ctx.registry.starters.building),
                    browser_state: browser_id, visitor_state: browser_id, **parts.filled(ctx.registry, visitor)}

        def on_banner_tick():
            return ctx.registry.banner, gr.Timer(active=ctx.registry.starters.building)

        demo.load(on_page_load, [browser_state],
                  [banner, banner_timer, browser_state, visitor_state, *parts.choosers, *parts.photo_examples],
                  api_name=False, queue=False)
        demo.load(lab_cached, None, lab_outputs, api_name=False, queue=False)
        banner_timer.tick(on_banner_tick, None, [banner, banner_timer], api_name=False, queue=False,
                          show_progress="hidden")
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=DEFAULT_CONCURRENCY)
    demo.ctx = ctx
    return demo


def launch_options() -> dict:
    """What `python app.py` passes to launch(); the tests start the app with the same."""
    return {"max_file_size": MAX_FILE_SIZE, "show_error": True, "allowed_paths": example_folders(),
            "ssr_mode": SSR_MODE}
