"""The token key is an explicit object; a key file created while participants exist is warned about loudly."""

from __future__ import annotations

import logging

from study import participation as P
from tests.support.participant_study import make_study
from workflows.participant.tokens import SECRET_FILENAME, TokenKey, warn_if_new_key


def test_a_new_key_file_with_participants_in_the_database_warns_loudly(db, tmp_path, caplog):
    make_study(db, tmp_path)
    P.enter_study(db, "test-study", "P1")
    old = TokenKey.load(tmp_path, environ={})
    (tmp_path / SECRET_FILENAME).unlink()  # the key file is lost; the server restarts
    new = TokenKey.load(tmp_path, environ={})
    with caplog.at_level(logging.WARNING, logger="alignlab.tokens"):
        assert warn_if_new_key(new, db)
    text = caplog.text
    assert "NEW participant token key" in text and "1 participants (1 still in progress)" in text
    assert "ALIGNLAB_SECRET_KEY" in text and str(tmp_path / SECRET_FILENAME) in text
    assert old.token(1) != new.token(1)


def test_no_warning_for_an_existing_key_an_env_key_or_an_empty_database(db, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="alignlab.tokens"):
        assert not warn_if_new_key(TokenKey.load(tmp_path, environ={}), db)  # new, but nobody to lose
        make_study(db, tmp_path)
        P.enter_study(db, "test-study", "P1")
        assert not warn_if_new_key(TokenKey.load(tmp_path, environ={}), db)  # the same file again
        assert not warn_if_new_key(TokenKey.load(tmp_path, environ={"ALIGNLAB_SECRET_KEY": "k"}), db)
    assert caplog.text == ""
