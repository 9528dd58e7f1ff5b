"""model_args parsing: every bad value is a one-line error naming the argument and the allowed values."""

import pytest

from lmms_topo_plugin.config.prune import PruneConfig
from lmms_topo_plugin.errors import ModelArgsError


def parse(**kwargs):
    return PruneConfig.from_model_args({k: str(v) for k, v in kwargs.items()})


def test_defaults_and_types():
    config = parse(method="block_influence", sparsity=0.25, keep_first_last="false", calib_limit=16)
    assert config.method == "block_influence" and config.sparsity == 0.25
    assert config.keep_first_last is False and config.calib_limit == 16 and config.batch_size == 1


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        ({"bogus": 1}, ["unknown key 'bogus'", "sparsity", "method"]),
        ({"method": "random", "sparsity": 1.0}, ["sparsity", "[0.0, 1.0)"]),
        ({"method": "random", "sparsity": -0.1}, ["sparsity", "[0.0, 1.0)"]),
        ({"method": "random", "sparsity": "lots"}, ["sparsity", "float"]),
        ({"method": "magic", "sparsity": 0.5}, ["method='magic'", "block_influence", "spacing", "none"]),
        ({"method": "random"}, ["method=random needs sparsity"]),
        ({"method": "none", "sparsity": 0.5}, ["method=none"]),
        ({"method": "random", "sparsity": 0.5, "n_remove": 2}, ["either sparsity or n_remove"]),
        ({"device": "gpu0"}, ["device='gpu0'", "cpu, cuda"]),
        ({"dtype": "float8"}, ["dtype='float8'", "bfloat16"]),
        ({"batch_size": 0}, ["batch_size", "[1"]),
        ({"keep_first_last": "maybe"}, ["keep_first_last", "true or false"]),
    ],
)
def test_bad_model_args_name_the_argument(args, fragments):
    with pytest.raises(ModelArgsError) as error:
        parse(**args)
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_layer_budget():
    assert parse(method="random", sparsity=0.25).layers_to_remove(8) == 2
    assert parse(method="random", n_remove=3).layers_to_remove(8) == 3
    assert parse(method="random", sparsity=0.0).layers_to_remove(8) == 0
    with pytest.raises(ModelArgsError, match="would remove every layer"):
        parse(method="random", n_remove=8).layers_to_remove(8)
    with pytest.raises(ModelArgsError, match=r"at most 6 of 8 .*keep_first_last"):
        parse(method="random", n_remove=7).layers_to_remove(8)
    assert parse(method="random", n_remove=7, keep_first_last=False).layers_to_remove(8) == 7
    with pytest.raises(ModelArgsError, match="method=spacing can remove at most 3"):
        parse(method="spacing", n_remove=4).layers_to_remove(8)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"method": "angular", "sparsity": 0.25, "topo_k": 5},
         "model_args: 'topo_k' is not a parameter of method=angular; its parameters: (none)"),
        ({"method": "angular", "topo_k": 5},  # the foreign key is reported before the missing budget
         "model_args: 'topo_k' is not a parameter of method=angular; its parameters: (none)"),
        ({"method": "none", "topo_k": 5},
         "model_args: 'topo_k' is a parameter of method=topology, not of method=none"),
        ({"topo_k": 5},  # method defaults to none
         "model_args: 'topo_k' is a parameter of method=topology, not of method=none"),
    ],
)
def test_a_foreign_method_key_is_refused_with_its_name_and_the_method(args, message):
    with pytest.raises(ModelArgsError) as error:
        parse(**args)
    assert str(error.value) == message


def test_a_method_key_is_accepted_by_its_own_method():
    config = parse(method="topology", sparsity=0.25, topo_k=5)
    assert config.method_params["topo_k"] == 5 and config.method_params["topo_select"] == "topn"
    assert parse(method="angular", sparsity=0.25).method_params == {}
