"""What `finetune` writes beside the weights and says at the end: the before/after line, the
model card (MODEL_CARD.md) and the learning curve (learning_curve.png)."""

from __future__ import annotations

import io


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def summary_line(r: dict) -> str:
    """`held-out nats/event: shipped 2.31 → yours 2.12 (−0.19) on 9 pieces; valid of the shipped
    corpus 2.03 → 2.05` (or `… not measured (why)`)."""
    h = r["held_out"]
    delta = h["yours"] - h["shipped"]
    sign = "−" if delta < 0 else "+"
    digits = 2 if abs(delta) >= 0.005 or delta == 0 else 3  # never a bare "−0.00" for a small change
    line = (f"held-out nats/event: {r['base_name']} {_num(h['shipped'])} → yours {_num(h['yours'])} "
            f"({sign}{abs(delta):.{digits}f}) on {h['pieces']} piece{'s' * (h['pieces'] != 1)}; ")
    ref, own = r["reference"], r.get("own_music")
    if ref.get("shipped") is None:
        line += f"valid of the shipped corpus {ref['what']}"
        if own and own.get("yours") is not None:
            line += f"; the {r['base_name']} model's own music {_num(own['shipped'])} → {_num(own['yours'])}"
        return line
    return line + f"valid of the shipped corpus {_num(ref['shipped'])} → {_num(ref['yours'])}"


def learning_curve_png(r: dict) -> bytes:
    """Held-out nats/event at each check against minutes of training, the shipped model's level
    and the weights kept marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curve = r["curve"]
    fig = Figure(figsize=(6.4, 3.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs = [c["minutes"] for c in curve]
    ax.plot(xs, [c["held_out"] for c in curve], marker="o", label="held-out (check subset)")
    if any(c.get("train_loss") is not None for c in curve):
        pts = [(c["minutes"], c["train_loss"]) for c in curve if c.get("train_loss") is not None]
        ax.plot(*zip(*pts), marker=".", alpha=0.6, label="training loss (windows)")
    ax.axhline(curve[0]["held_out"], color="grey", linestyle="--", label=f"{r['base_name']} model")
    best = min(curve, key=lambda c: c["held_out"])
    ax.plot([best["minutes"]], [best["held_out"]], marker="*", markersize=14, color="C3", label="kept")
    ax.set_xlabel("minutes of training")
    ax.set_ylabel("nats/event")
    ax.set_title(f"Fine-tuning on {r['folder_name']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def model_card(r: dict) -> str:
    h, ref, d = r["held_out"], r["reference"], r["data"]
    composer = f"; taught the composer name `{r['composer']}`" if r.get("composer") else ""
    new = " (a new name: the vocabulary grew)" if r.get("composer_new") else ""
    how = "the folder's own split" if d["own_split"] else "a fifth of the pieces, by piece"
    lines = [
        f"# {r['name']}: fine-tuned from the {r['base_name']} model",
        "",
        (f"Made in the studio (*Teach it your music*) from {r['uploaded']} uploaded MIDI files"
         if r.get("uploaded") else f"Made by `classical-music finetune {r['folder']}`")
        + f" on {r['date']}{composer}{new}.",
        "An ordinary checkpoint: `classical-music generate --checkpoint THIS_FOLDER`, `evaluate --checkpoint`, "
        "`serve --checkpoint` (or pick it in the studio's model menu).",
        "",
        "| | |",
        "|---|---|",
        f"| started from | {r['base']} |",
        f"| data | {d['train_files']} files of {d['train_pieces']} pieces ({d['train_hours']:.2f} h, "
        f"{d['train_events']:,} events) to learn from; {d['held_out_files']} files of {h['pieces']} pieces held out "
        f"({how}); "
        f"{d['skipped']} files skipped"
        + (f"; {d['already_learned']} files the base model had already learned from" if d.get("already_learned") else "")
        + " |",
        f"| recipe | {r['recipe']} (learning rate {r['lr']:g}; {r['trainable']:,} of {r['parameters']:,} "
        f"parameters learn), windows of {r['seq_len']} events, batch {r['batch_size']} |",
        f"| training | {r['steps']} steps, {r['train_tokens']:,} events seen, {r['minutes']:.1f} min of a "
        f"{r['budget_minutes']:g}-min budget on {r['hardware']}; stopped: {r['stop_reason']}"
        + (f"; rehearsing its own music at weight {r['rehearse']:g}" if r.get("rehearse") else "")
        + (f"; {r['kept_share']:.0%} of the change kept (the whole of it forgot more of the base model's "
           "music than allowed)" if r.get("kept_share", 1.0) < 1 else "") + " |",
        f"| held-out nats/event ({h['what']}) | {r['base_name']} {h['shipped']:.4f} → this model "
        f"**{h['yours']:.4f}** ({h['yours'] - h['shipped']:+.4f}) |",
    ]
    if r.get("home_keys"):
        keys = ", ".join(f"{k} {n}" for k, n in r["home_keys"].items())
        lines.append(f"| keys your pieces open in (a piece asked for no key is drawn from them) | {keys} |")
    if ref.get("shipped") is not None:
        lines.append(f"| shipped corpus's valid split ({ref['what']}) | {r['base_name']} {ref['shipped']:.4f} → "
                     f"this model {ref['yours']:.4f} ({ref['yours'] - ref['shipped']:+.4f}) |")
    else:
        lines.append(f"| shipped corpus's valid split | {ref['what']} |")
    own = r.get("own_music")
    if own and own.get("yours") is not None:
        lines.append(f"| the {r['base_name']} model's own music, the forgetting check without the corpus: "
                     f"{own['what']} | {r['base_name']} {own['shipped']:.4f} → this model {own['yours']:.4f} "
                     f"({own['yours'] - own['shipped']:+.4f}) |")
    lines += [
        "",
        "Lower is better: nats per event are how surprised the model is by each next event of music it never "
        "trained on, each piece scored from its start with the LSTM state carried (as `classical-music evaluate` "
        "does). The held-out pieces say whether it learned your music; "
        + ("the shipped corpus's valid split says whether it forgot the rest." if ref.get("shipped") is not None else
           f"the {r['base_name']} model's own music says whether it forgot the rest (the shipped corpus was not "
           "there to measure)."),
        "",
        "![learning curve](learning_curve.png)",
        "",
        (f"Licence: {r['base_license']}, as the {r['base_name']} model's weights these derive from; "
         if r.get("base_license") else
         f"Licence: the weights derive from the {r['base_name']} model's (see its model card); ")
        + "the music in the folder adds its own terms, which you know best.",
        "",
    ]
    return "\n".join(lines)
