"""Propagation (official concatenation and clean BFS), graph refresh and positive selection."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from methods_reference import bfs_ball, official_walk, propagation_width

from methods.parts.neighbours import NeighbourTable, neighbours_from_topm
from methods.parts.positives import select_positives
from methods.parts.propagation import propagate_bfs, propagate_concat, rowwise_unique

torch.set_num_threads(1)

# A hand-worked graph (k = 2): 0->{1,2}, 1->{2,0}, 2->{3,4}, 3->{0,5}, 4->{4,5}, 5->{1,3}
HAND = torch.tensor([[1, 2], [2, 0], [3, 4], [0, 5], [4, 5], [1, 3]])


def test_concat_hand_worked_order_with_duplicates_and_anchor():
    out = propagate_concat(HAND, torch.tensor([0, 4]), steps=3)
    # anchor 0: layer1 [1,2]; layer2 N(1)+N(2) = [2,0,3,4]; layer3 N(2),N(0),N(3),N(4)
    assert out[0].tolist() == [1, 2, 2, 0, 3, 4, 3, 4, 1, 2, 0, 5, 4, 5]
    # anchor 4 (self loop): [4,5]; [4,5,1,3]; [4,5,1,3,2,0,0,5]
    assert out[1].tolist() == [4, 5, 4, 5, 1, 3, 4, 5, 1, 3, 2, 0, 0, 5]


def test_concat_width_is_sum_of_powers():
    table = torch.randint(0, 50, (50, 4))
    assert propagate_concat(table, torch.arange(3), 3).shape == (3, 84) == (3, propagation_width(4, 3))
    assert propagate_concat(table, torch.arange(3), 4).shape == (3, 340)
    assert propagate_concat(table, torch.arange(3), 1).tolist() == table[:3].tolist()


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 25), st.integers(1, 4), st.integers(1, 4), st.randoms(use_true_random=False))
def test_concat_equals_official_walk_and_bfs_equals_graph_distance(n, k, steps, rnd):
    rows = [[rnd.randrange(n) for _ in range(k)] for _ in range(n)]
    table = torch.tensor(rows)
    anchors = torch.arange(n)
    concat = propagate_concat(table, anchors, steps)
    ids, mask = propagate_bfs(table, anchors, steps)
    for a in range(n):
        assert concat[a].tolist() == official_walk(rows, a, steps)
        ball = bfs_ball(rows, a, steps)
        found = ids[a][mask[a]].tolist()
        assert len(found) == len(set(found)) and set(found) == ball
        assert set(concat[a].tolist()) - {a} == ball  # the multiset covers exactly the BFS ball
        assert (ids[a][~mask[a]] == a).all()


def test_bfs_row_with_no_neighbours_other_than_itself():
    ids, mask = propagate_bfs(torch.tensor([[0], [0]]), torch.tensor([0]), steps=2)
    assert ids.shape == (1, 1) and not mask.any()


def test_rowwise_unique_compacts_and_excludes():
    ids = torch.tensor([[5, 3, 5, 1], [2, 2, 2, 2]])
    unique, mask = rowwise_unique(ids, fill=torch.tensor([9, 9]), exclude=torch.tensor([1, 7]))
    assert unique.tolist() == [[3, 5], [2, 9]]
    assert mask.tolist() == [[True, True], [True, False]]


def test_graph_refresh_replaces_anchor_with_next_neighbour():
    topm = torch.tensor([[7, 3, 8, 1, 2], [3, 7, 8, 1, 2], [1, 2, 8, 3, 7]])
    rows = neighbours_from_topm(topm, anchors=torch.tensor([7, 8, 5]), k=3)
    assert rows.tolist() == [[1, 3, 8], [3, 7, 1], [1, 2, 8]]


def test_neighbour_table_update_keeps_last_repeat_and_checks_loads():
    table = NeighbourTable(5, 2)
    table.update(torch.tensor([1, 3, 1]), torch.tensor([[0, 2], [4, 4], [2, 3]]))
    assert table.table.tolist() == [[0, 0], [2, 3], [0, 0], [4, 4], [0, 0]]
    for bad in (torch.zeros(5, 3, dtype=torch.long), torch.full((5, 2), 5)):
        try:
            table.load_state_dict({"table": bad})
        except ValueError as err:
            assert "neighbour table" in str(err)
        else:
            raise AssertionError("bad table accepted")


def test_select_positives_hardest_easiest_and_clamp():
    sims = torch.tensor([[0.9, 0.1, 0.5, 0.1, 0.7]])
    cols, valid = select_positives(sims, 2, hardest=True)
    assert sorted(cols[0].tolist()) == [1, 3] and valid.all()  # equal values each count
    cols, _ = select_positives(sims, 2, hardest=False)
    assert sorted(cols[0].tolist()) == [0, 4]
    cols, valid = select_positives(sims, 50, hardest=True)  # P > candidates: all of them
    assert cols.shape == (1, 5) and valid.all()


def test_select_positives_respects_mask():
    sims = torch.tensor([[0.0, 0.2, 0.4, 0.6]])
    mask = torch.tensor([[False, True, True, False]])
    cols, valid = select_positives(sims, 3, hardest=True, mask=mask)
    assert cols[0, :2].tolist() == [1, 2] and valid[0].tolist() == [True, True, False]
