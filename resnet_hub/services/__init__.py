"""What the app's buttons and the command line do, as plain Python: usable and tested without Gradio.

- :mod:`.registry`: which models are offered, each loaded once (:class:`ModelRegistry`).
- :mod:`.starters`: the offline starter digit models, built once in the background.
- :mod:`.jobs`: fine-tunes and the lab's live runs as owned jobs on the one training slot.
- :mod:`.publish`: a stored model pushed to the Hub or zipped for download.
- :mod:`.input_notes`: what a visitor should know about how a model saw their picture.

Importing any of them starts nothing: threads start when a method is called.
"""
