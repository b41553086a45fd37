"""resnet-hub: try, compare and fine-tune ResNets. Wiring only: the page is resnet_hub.ui, the work resnet_hub.

Run locally with `python app.py`; on a Hugging Face Space this file is the app, run as a script. Importing it builds
the page and starts nothing: `ctx.start()` checks the Hub and starts the starters' build and the frozen-part
preparation, once.
"""

from resnet_hub.ui import AppContext, create_app, launch_options

ctx = AppContext()
demo = create_app(ctx)

if __name__ == "__main__":
    ctx.start()
    demo.launch(**launch_options())
