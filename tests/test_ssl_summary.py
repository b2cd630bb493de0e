"""vhrfm.ssl.summary: chapter 1's averages over the probe tasks, read from a probe table the way the metrics keep it
(an encoder's chosen set and every set under ``by_features``; a baseline with one set)."""

import pytest


def _table():
    enc = lambda acc, val, pooled: {"linear_acc": acc, "linear_val_acc": val, "features": "multilevel",  # noqa: E731
                                    "by_features": {"pooled": {"linear_acc": pooled, "effective_rank": 4.0}}}
    return {"a": {"m": enc(0.8, 0.7, 0.6), "rcf": {"linear_acc": 0.5, "effective_rank": 2.0}},
            "b": {"m": enc(0.6, 0.9, 0.7), "rcf": {"linear_acc": 0.7, "effective_rank": 6.0}}}


def test_means_over_tasks_read_the_chosen_set_or_the_pooled_map():
    from vhrfm.ssl.summary import mean_over_tasks, mean_pooled_acc, mean_rank, pooled_acc

    probe = _table()
    assert mean_over_tasks(probe, "m") == pytest.approx(0.7)
    assert mean_over_tasks(probe, "m", "linear_val_acc") == pytest.approx(0.8)
    assert mean_pooled_acc(probe, "m") == pytest.approx(0.65)  # not the chosen (multilevel) set's 0.7
    assert mean_pooled_acc(probe, "rcf") == pytest.approx(0.6) == pooled_acc(probe["a"]["rcf"]) + 0.1
    assert mean_rank(probe, "rcf") == pytest.approx(4.0)


def test_the_paper_filters_are_the_summary_functions(tmp_path, monkeypatch):
    """The paper's task_mean / pooled_mean give what the notebook writes (the same functions), not a re-sum."""
    import vhrfm.paper as paper

    tpl = tmp_path / "t.md"
    tpl.write_text('{{ m.p | task_mean("m", "linear_val_acc") | round(4) }} {{ m.p | pooled_mean("m") | round(4) }}\n')
    monkeypatch.setattr(paper, "load_metrics", lambda profile: {"p": _table()})
    out = paper.render("smoke", template=tpl, out=tmp_path / "t.html")
    assert "<p>0.8 0.65</p>" in out.read_text()
