"""resolve_dataset: a missing dataset is a user error (and still a FileNotFoundError)."""

import pytest


def test_missing_datasets_are_user_errors_and_still_file_not_found(tmp_path):
    from rtdetr.data import resolve_dataset
    from rtdetr.errors import UserError

    for path, message in [
        (tmp_path / "nope", "dataset not found"),
        (tmp_path, "is not a dataset: expected annotations"),
    ]:
        with pytest.raises(UserError, match=message) as info:
            resolve_dataset(path)
        assert isinstance(info.value, FileNotFoundError)  # callers catching that keep working
