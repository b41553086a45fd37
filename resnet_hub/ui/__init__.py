"""The Gradio app: one module per tab, built from the services. The only part of resnet_hub that imports Gradio.

:func:`create_app` builds the page from an :class:`AppContext`; :meth:`AppContext.start` starts what runs in the
background; :func:`launch_options` is what ``python app.py`` launches it with.
"""

from .app import create_app, launch_options
from .context import AppContext

__all__ = ["AppContext", "create_app", "launch_options"]
