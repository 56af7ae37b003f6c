"""Which inversion × editor pairs can run: checked from the configuration alone, before any job starts.

An inversion declares the step hooks its results override (`Inversion.state`, names from `inversions.base.HOOKS`),
the guidance scale that state is computed for, and whether its reverse step needs the unconditional half of
classifier-free guidance; an editor declares the hooks it honours (`Editor.uses`). A pair is refused when the
editor would drop part of the state, guide at another scale than the state was computed for (the
source would no longer be reconstructed, so the row would measure a broken inversion), or guide at 1 where the
sampler needs the unconditional prediction. `launch.py` checks every job of a sweep before launching any
(hydra_plugins/invbench_sweeper) and each job checks its own pair again.
"""

from __future__ import annotations

from editors import Editor
from invbench.errors import ConfigError
from inversions import Inversion
from inversions.base import HOOKS


def incompatibilities(inversion: Inversion, editor: Editor) -> list[str]:
    """Why `editor` cannot edit what `inversion` produces, one reason per entry, each with its fix; [] if it can."""
    pair = f"inversion={inversion.name} with editor={editor.name}"
    problems = [
        f"{pair}: the editor cannot use the inversion's {HOOKS[name]} ({name}); pair it with an "
        "editor that uses it (docs/methods.md, 'Which pairs run'; invbench-pairs model=<model> lists the pairs)"
        for name in sorted(inversion.state() - editor.uses)
    ]
    if editor.pairs_with is not None and inversion.name not in editor.pairs_with:
        why = (
            "it is inversion-free (it edits the source latent itself, and would ignore the inversion while its row "
            "named it)"
            if editor.pairs_with == {"none"}
            else "it reads what those inversions compute"
        )
        choices = ", ".join(f"inversion={name}" for name in sorted(editor.pairs_with))
        problems.append(f"{pair}: the editor pairs with {choices} only, as {why}; pick one of them")
    tuned, guidance = inversion.tuned_for_guidance(), editor.source_guidance(inversion.state())
    key = "source_guidance_scale" if guidance != editor.guidance_scale else "guidance_scale"
    if tuned is not None and tuned != guidance:
        problems.append(
            f"{pair}: the inversion's state is computed to reconstruct the source under guidance {tuned:g}, the "
            f"editor guides its source branch at {guidance:g}; set inversion.{inversion.guidance_key} and "
            f"editor.{key} to one value"
        )
    if inversion.needs_unconditional_half() and min(guidance, editor.guidance_scale) == 1:
        key = "guidance_scale" if editor.guidance_scale == 1 else key
        problems.append(
            f"{pair}: the inversion's sampler needs the unconditional prediction, which an editor guiding at 1 does "
            f"not compute; set editor.{key} above 1"
        )
    return problems


def family_problems(family: str, model_name: str, *methods: Inversion | Editor) -> list[str]:
    """Why a method cannot run on a model of `family`, one entry per method, each with its fix."""
    return [
        f"{'inversion' if isinstance(method, Inversion) else 'editor'}={method.name} works on the model families "
        f"{sorted(method.families)}, but model={model_name} is of family '{family}': pick a model of those families "
        "or a method that supports it (docs/reference/options.md lists each method's families)"
        for method in methods
        if family not in method.families
    ]


def check_pair(inversion: Inversion, editor: Editor) -> None:
    problems = incompatibilities(inversion, editor)
    if problems:
        raise ConfigError("\n".join(problems))
