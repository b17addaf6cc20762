"""Zoology's panels from recall.csv rows whose settings are partly missing (an empty cell reads as NaN)."""

import math

import pandas as pd

from bench.analysis import zoology


def test_missing_settings_are_a_setting_of_their_own():
    # batch empty on every row, vocab on a second cell at width 128: pandas 3's astype(str) keeps NaN, which the
    # settings' key must not choke on; the cell of vocab 8192 reaches every width, so it is the panel's at 128
    rows = pd.DataFrame(
        [
            dict(model="gss", seq_len=64, num_kv_pairs=4, dim=dim, vocab=vocab, steps=500, depth=2, batch=math.nan)
            | dict(dtype="float32", status="ok")
            for dim, vocab in ((64, 8192), (128, math.nan), (128, 8192), (256, 8192))
        ]
    )
    assert zoology.in_panels(rows).tolist() == [True, False, True, True]
