"""``validate_id``: the one gate for user ids, run names and model names used in paths, keys and queries."""

from __future__ import annotations

import pytest

from yolo_task_manager.errors import InvalidInput
from yolo_task_manager.ids import MAX_ID_LENGTH, validate_id


@pytest.mark.parametrize(
    "value",
    ["alice", "user_42", "my-model.v2", "A", "0", "-dash-first", "a" * MAX_ID_LENGTH, "run.2024-01-01_final"],
)
def test_safe_ids_are_returned_unchanged(value: str) -> None:
    # Given a name made of letters, digits, '.', '_' and '-' without a leading dot
    # When it is validated
    result = validate_id(value, "model_name")

    # Then the caller gets it back as is
    assert result == value


@pytest.mark.parametrize(
    "value",
    [
        "../x",
        "..",
        ".",
        "/",
        "/etc",
        "a/b",
        "a\\b",
        "",
        ".hidden",
        "a" * (MAX_ID_LENGTH + 1),
        "has space",
        "new\nline",
        "trailing\n",
        "ünïcode",
        "semi;colon",
        "star*",
        "colon:x",
    ],
)
def test_unsafe_strings_raise_invalid_input(value: str) -> None:
    # Given a string that could escape a folder, break a key, or is empty or too long
    # When it is validated
    # Then InvalidInput is raised
    with pytest.raises(InvalidInput):
        validate_id(value, "user_id")


@pytest.mark.parametrize("value", [None, 42, 1.5, b"alice", ["alice"], True])
def test_non_strings_raise_invalid_input(value: object) -> None:
    # Given something that is not a string
    # When it is validated
    # Then InvalidInput is raised, never a TypeError
    with pytest.raises(InvalidInput):
        validate_id(value)


def test_the_message_names_the_argument_and_the_rule() -> None:
    # Given a run name with a slash
    # When it is validated as "run_name"
    with pytest.raises(InvalidInput) as info:
        validate_id("a/b", "run_name")

    # Then the message says which argument is wrong and what is allowed
    message = str(info.value)
    assert "run_name" in message
    assert "'a/b'" in message
    assert "letters, digits" in message


def test_the_length_message_states_the_limit() -> None:
    # Given a name one character over the limit
    # When it is validated
    with pytest.raises(InvalidInput) as info:
        validate_id("x" * (MAX_ID_LENGTH + 1), "model_name")

    # Then the message gives the length and the limit
    assert str(MAX_ID_LENGTH + 1) in str(info.value)
    assert str(MAX_ID_LENGTH) in str(info.value)


def test_invalid_input_is_a_value_error() -> None:
    # Given a caller that catches ValueError
    # When an id is rejected
    # Then the ValueError handler sees it
    with pytest.raises(ValueError):
        validate_id("")


@pytest.mark.parametrize("value", ["pretrained", "runs", "_system", "Pretrained", "RUNS"])
def test_the_systems_folders_are_not_user_ids(value: str) -> None:
    # Given the name of a folder the system owns under the storage root (on any letter case)
    # When it is validated as a user id
    with pytest.raises(InvalidInput) as info:
        validate_id(value, "user_id")

    # Then it is refused, saying why
    assert "reserved for the system's own folders" in str(info.value)


def test_the_systems_folder_names_are_fine_as_model_or_run_names() -> None:
    # Given names that are reserved only as user ids
    # When they are validated as a model name and a run name
    # Then they pass
    assert validate_id("pretrained", "model_name") == "pretrained"
    assert validate_id("runs", "run_name") == "runs"
