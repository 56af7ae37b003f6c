"""PIE-Bench's ten editing types (`editing_type_id`, README of cure-lab/PnPInversion) and TODInv's edit classes, the
one vocabulary of edit classes that every dataset reader, method and table uses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from invbench.errors import ConfigError

# id -> (folder under annotation_images/, human name)
EDITING_TYPES: dict[int, tuple[str, str]] = {
    0: ("0_random_140", "random"),
    1: ("1_change_object_80", "change object"),
    2: ("2_add_object_80", "add object"),
    3: ("3_delete_object_80", "delete object"),
    4: ("4_change_attribute_content_40", "change content"),
    5: ("5_change_attribute_pose_40", "change pose"),
    6: ("6_change_attribute_color_40", "change color"),
    7: ("7_change_attribute_material_40", "change material"),
    8: ("8_change_background_80", "change background"),
    9: ("9_change_style_80", "change style"),
}


# TODInv's edit classes (seed 002, §3.3): which prompt embeddings an edit may touch
EDIT_CLASSES = ("structure", "appearance", "global")
# other names for them seen in configs and data; refused with the right word, never mapped silently
EDIT_CLASS_SYNONYMS = {"shape": "structure", "texture": "appearance", "color": "appearance", "all": "global"}


def edit_class_problem(value: object) -> str | None:
    """Why `value` is not an edit class (None when it is), with the word to use instead."""
    if value in EDIT_CLASSES:
        return None
    hint = EDIT_CLASS_SYNONYMS.get(str(value).strip().lower())
    if hint is not None:
        return f"{value!r} is not an edit class here; write '{hint}' (the classes are {', '.join(EDIT_CLASSES)})"
    return f"{value!r} is not one of the edit classes {', '.join(EDIT_CLASSES)}"


def edit_class_lookup(classes: Mapping[str, Sequence[int]]) -> dict[int, str]:
    """`{class: [type ids]}` (conf/edit_classes/*.yaml) -> `{type id: class}`; every type in exactly one class."""
    lookup: dict[int, str] = {}
    for edit_class, type_ids in classes.items():
        problem = edit_class_problem(edit_class)
        if problem:
            raise ConfigError(f"edit_classes: {problem} (conf/edit_classes/)")
        for type_id in type_ids:
            if type_id not in EDITING_TYPES:
                raise ConfigError(f"edit_classes.{edit_class}: {type_id} is not a PIE-Bench editing type (0-9)")
            if type_id in lookup:
                raise ConfigError(
                    f"edit_classes: editing type {type_id} is in both '{lookup[type_id]}' and '{edit_class}'"
                )
            lookup[type_id] = edit_class
    unassigned = sorted(set(EDITING_TYPES) - set(lookup))
    if unassigned:
        raise ConfigError(f"edit_classes: editing type(s) {unassigned} belong to no class; add each to one")
    return lookup
