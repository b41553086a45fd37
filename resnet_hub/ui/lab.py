"""The "Why residual?" tab: the project's own full runs of the lab's three experiments, and a short one run live."""

from __future__ import annotations

import gradio as gr

from ..lab import CACHED_SETTINGS, load_cached, load_shipped
from .charts import lab_gradient_curves, lab_training_curves
from .context import AppContext
from .workarounds import user_error

EXPERIMENTS = (("degradation", "Degradation: deeper plain nets train worse"),
               ("gradients", "Vanishing gradients at initialisation"),
               ("plain-vs-resnet", "Plain CNN vs ResNet"))
LIVE_TITLES = {"degradation": "Live: training error of the short run", "gradients": "Live: gradients at initialisation",
               "plain-vs-resnet": "Live: training error of the short run"}

LAB_TEXT = {
    "degradation": (
        "**The degradation problem.** Plain and residual nets of two depths, trained with one recipe on the bundled "
        "MNIST sample. *Look for:* the deeper **plain** net ends with the **higher** training error (so it is not "
        "over-fitting: it fits its own training digits worse), while the deeper **residual** net ends no worse "
        "than the shallower one. Curves: the running training error, per net, mean over the seeds."),
    "gradients": (
        "**Gradients at initialisation.** One real batch through each net of the deepest depth measured, untrained. "
        "Each line is the size of the gradient that reaches a block's output, from the input (left) to the output "
        "(right), on a log scale. *Look for:* with the naive initialisation (every weight from N(0, 0.01²)) and no "
        "BatchNorm, the plain net's gradient **vanishes**: it underflows to exactly 0 before it reaches the input "
        "(drawn at the floor of the chart: 'floored'). Kaiming's initialisation keeps it within about an order of magnitude. "
        "BatchNorm makes the initialisation irrelevant (its two lines are one: 'any init'), but through a deep **plain** net its "
        "gradient **grows** towards the input by orders of magnitude (Yang et al. 2019, arXiv:1902.08129); with "
        "shortcuts it grows far less. Without BatchNorm, Kaiming's initialisation makes a **residual** net's signal "
        "grow with every block (each shortcut adds its branch's variance) until it explodes: why ResNets keep "
        "BatchNorm, or start each branch at zero."),
    "plain-vs-resnet": (
        "**A plain CNN against a ResNet** on the same digits and recipe, the comparison of the MNIST lesson. "
        "*Look for:* which reaches the higher validation accuracy, with how many parameters."),
}


LAB_FIRST = "gradients"  # the live experiment chosen when the page opens: seconds long


def lab_result(experiment: str):
    """(result, shipped): this machine's last completed full run, else the project's own, shipped with the package
    (so a fresh install, a new Space, has the lesson to show), else (None, False)."""
    own = load_cached(experiment)
    if own is not None:
        return own, False
    shipped = load_shipped(experiment)
    return shipped, shipped is not None


def _lab_caption(experiment: str, result, shipped: bool = False) -> str:
    """What was measured (when, where, how) and its numbers: shown under the picture, full width."""
    if result is None:
        return (f"_No completed run is kept yet: run `python -m resnet_hub why-residual {experiment}` "
                f"(the full version), or a short one live below._")
    env = result.environment
    measured = (f"Measured {env.get('date', '?')} on {env.get('cpu', env.get('device', '?'))}, "
                f"torch {env.get('torch', '?')}, {result.seconds:.0f} s.")
    if shipped:
        measured = (f"Measured by the project (shipped with the app; `python -m resnet_hub why-residual {experiment}` "
                    f"measures it on this machine): {env.get('date', '?')}, "
                    f"{env.get('cpu', env.get('device', '?'))}, torch {env.get('torch', '?')}, {result.seconds:.0f} s.")
    if result.experiment == "gradients":
        table = "| net | BN | init | gradient, stem / last block | forward pass |\n|---|---|---|---|---|\n" + "\n".join(
            f"| {r['net']} | {r['batchnorm']} | {r['init']} | {_sci(r['signal first/last'])} | {r['forward']} |"
            for r in result.table())
        return f"{measured}\n\n{table}"
    rows = "\n".join(f"| {r['net']} | {r['layers']} | {r['parameters']:,} | {_pct(r['train error (mean)'])} "
                     f"({_pct(r['train error (min)'])}-{_pct(r['train error (max)'])}) | {_pct(r['val accuracy (mean)'])} |"
                     for r in result.summary())
    table = ("| net | layers | parameters | final training error, mean (range over seeds) | validation accuracy |\n"
             "|---|---|---|---|---|\n" + rows)
    verdicts = "".join(f"\n- {'**holds**' if o['holds'] else '**does not hold**'}: {o['claim']}" for o in result.orderings())
    recipe = result.settings.recipe
    how = (f"Recipe for every net: SGD momentum {recipe.momentum}, lr {recipe.warmup_lr} for {recipe.warmup_epochs} "
           f"epoch then {recipe.lr} with cosine decay, batch {recipe.batch_size}, {recipe.epochs} epochs; width "
           f"{result.settings.width}; seeds {', '.join(map(str, result.settings.seeds))}.")
    return f"{measured} {how}\n\n{table}\n{verdicts}"


def _pct(v) -> str:
    return "-" if v is None else f"{v:.2%}"


def _sci(v) -> str:
    return "-" if v is None else f"{v:.1e}"


def lab_cached():
    """The last completed result of each experiment, as pictures and text: read on every page load."""
    out = []
    for experiment in ("degradation", "gradients", "plain-vs-resnet"):
        result, shipped = lab_result(experiment)
        curves = lab_gradient_curves if experiment == "gradients" else lab_training_curves
        out += [curves(result) if result else None, _lab_caption(experiment, result, shipped)]

    return tuple(out)


def _lab_done(experiment, result) -> str:
    """What a finished live run says: its verdicts, and that the full version's are the ones to read."""
    what, full_what = _lab_scope(result.settings), _lab_scope(CACHED_SETTINGS[experiment])
    where = ("its result is above" if lab_result(experiment)[0] is not None else
             f"`python -m resnet_hub why-residual {experiment}` runs it on this machine")
    status = f"**Done** in {result.seconds:.0f} s: the short version ({what})."
    verdicts = result.orderings() if experiment == "degradation" else []
    if verdicts:
        status += " On one short run the verdicts are a preview:" + "".join(
            f"\n- {'**holds**' if o['holds'] else '**does not hold**'}: {o['claim']}" for o in verdicts)
        status += f"\n\nThe full version ({full_what}) judges them over its seeds: {where}."
    else:
        status += f" The full version ({full_what}): {where}."
    return status


def _lab_scope(settings) -> str:
    recipe = getattr(settings, "recipe", None)
    if recipe is None:  # the gradients: one batch through nets of these depths
        return f"depths {', '.join(map(str, sorted(settings.depths)))}"
    seeds = len(settings.seeds)
    return f"{recipe.epochs} epochs, {seeds} seed{'s' * (seeds != 1)}"


def _lab_live_picture(experiment, result):
    """The live chart's data so far, or None: nothing to draw yet (a plot set to None breaks: see drawn_or_kept)."""
    if experiment == "gradients":  # seconds long; its variants are drawn together at the end (one colour domain)
        return lab_gradient_curves(result) if result.stopped or len(result.nets) == _gradient_variants(result) \
            else None
    return lab_training_curves(result)


def _gradient_variants(result) -> int:
    return len(result.settings.depths) * 2 * 2 * 2  # plain/residual x BatchNorm or not x naive/Kaiming init


def running_button() -> gr.Button:
    return gr.Button("Running… (Stop ends it)", interactive=False)


def run_button() -> gr.Button:
    return gr.Button("Run", interactive=True)


def build_lab_tab(ctx: AppContext, visitor_state: gr.State) -> list:
    """The tab; returns the charts and captions of the full runs, which the page fills on load (:func:`lab_cached`)."""
    with gr.Tab("Why residual?", id="why-residual"):
        gr.Markdown("Why shortcuts `H(x) = F(x) + x`? Three experiments on this project's own blocks "
                    "(He et al. 2015, arXiv:1512.03385, section 4.2: CIFAR-style nets of 6n+2 layers), "
                    "each shown as last completed on this machine (else as the project measured it), with when, "
                    "where and how it was measured.")
        outputs = []
        for experiment, title in EXPERIMENTS:
            with gr.Row():
                if experiment == "gradients":
                    plot = gr.LinePlot(None, x="block", y="log10 gradient", color="variant", title=title,
                                       x_title="block (input to output)", y_title="log10 |gradient|", height=300,
                                       elem_id=f"lab-{experiment}-plot", scale=2)
                else:
                    plot = gr.LinePlot(None, x="step", y="training error", color="net", title=title,
                                       x_title="training step", y_title="training error", y_lim=[0, 1], height=300,
                                       elem_id=f"lab-{experiment}-plot", scale=2)
                gr.Markdown(LAB_TEXT[experiment], elem_id=f"lab-{experiment}-look-for")
            text = gr.Markdown(elem_id=f"lab-{experiment}-text")
            outputs += [plot, text]
        gr.Markdown("### Run a short version live")
        with gr.Row():
            experiment_choice = gr.Radio([e for e, _ in EXPERIMENTS], value=LAB_FIRST, label="Experiment",
                                         elem_id="lab-experiment")
            run_btn = gr.Button("Run", variant="primary", elem_id="lab-run")
            stop_btn = gr.Button("Stop", variant="stop", elem_id="lab-stop")
        status = gr.Markdown(elem_id="lab-status")
        # The chart of the experiment chosen shows from the first page load on (the radio's change event fires
        # only when it changes).
        live_plot = gr.LinePlot(None, x="step", y="training error", color="net", title=LIVE_TITLES[LAB_FIRST],
                                x_title="training step", y_title="training error", y_lim=[0, 1], height=300,
                                elem_id="lab-live-plot", visible=LAB_FIRST != "gradients")
        live_gradients = gr.LinePlot(None, x="block", y="log10 gradient", color="variant",
                                     title=LIVE_TITLES["gradients"], x_title="block (input to output)",
                                     y_title="log10 |gradient|", height=300, elem_id="lab-live-gradients",
                                     visible=LAB_FIRST == "gradients")

        def pick(experiment):
            return (gr.LinePlot(visible=experiment != "gradients", title=LIVE_TITLES[experiment]),
                    gr.LinePlot(visible=experiment == "gradients"))

        def live(experiment, browser_id=None, request: gr.Request = None, profile: gr.OAuthProfile | None = None):
            """Run the short version of one experiment, streaming its curves; Stop keeps them on the page, caches
            nothing. The Run button is off while it runs."""
            picture_of = (lambda p: {live_gradients: p}) if experiment == "gradients" else (lambda p: {live_plot: p})
            visitor = ctx.visitor_of(browser_id, request, profile)
            if (mine := ctx.lab.running(visitor)) is not None:
                raise user_error(f"your {mine.experiment} run is still going: Stop it, or wait for it to end")
            run = ctx.lab.start(experiment, visitor=visitor)
            last = None
            yield {status: f"Running the short {experiment} experiment…", run_btn: running_button()}
            try:
                while (ahead := ctx.lab.position(run)) > 0:  # one training at a time: a fine-tune may hold the slot
                    yield {status: f"**Waiting in line: {ahead} training{'s' * (ahead != 1)} ahead** (one trains "
                                   f"at a time on this machine). It starts by itself; Stop leaves the line."}
                    run.ticket.left.wait(1.0)
                while (event := run.events.get()) is not None:
                    last = event
                    if event.kind in ("step", "epoch", "net", "start") and run.events.qsize() < 2:
                        picture = _lab_live_picture(experiment, event.result)  # None: nothing new to draw
                        yield {status: f"**{event.progress:.0%}** · {event.message}",
                               **({} if picture is None else picture_of(picture))}
            except GeneratorExit:  # the visitor left (Gradio closed this generator): no one watches, so it stops
                ctx.lab.stop(None, run.id)  # and frees the one training slot for the next visitor in line
                raise
            if run.waited:
                yield {status: "**Stopped before its turn came**: nothing ran.", run_btn: run_button()}
                return
            if run.error:
                yield {run_btn: run_button()}
                raise user_error(run.error)
            result = run.result
            text = (f"**Stopped** at {last.progress:.0%}: the curves so far stay here; nothing is kept."
                    if result.stopped and last is not None else _lab_done(experiment, result))
            final = _lab_live_picture(experiment, result)
            yield {status: text, run_btn: run_button(), **({} if final is None else picture_of(final))}

        def stop(browser_id=None, request: gr.Request = None, profile: gr.OAuthProfile | None = None):
            if ctx.lab.stop(ctx.visitor_of(browser_id, request, profile)):
                gr.Info("Stopping at the next step; the curves so far stay, nothing is kept.")
            else:
                gr.Warning("No live run of yours is going.")

        experiment_choice.change(pick, experiment_choice, [live_plot, live_gradients], api_name=False, queue=False)
        run_btn.click(live, [experiment_choice, visitor_state], [live_plot, live_gradients, run_btn, status],
                      api_name="why_residual", concurrency_limit=4, concurrency_id="lab", show_progress="minimal"
                      ).then(run_button, None, run_btn, api_name=False, queue=False)
        stop_btn.click(stop, [visitor_state], None, api_name="stop_why_residual", queue=False)
    return outputs
