"""model_args parsing: every bad value is a one-line error naming the argument and the allowed values."""

import pytest

from lmms_topo_plugin.config.prune import PruneConfig
from lmms_topo_plugin.errors import ModelArgsError
from lmms_topo_plugin.plan import layer_budget, method_scorer


def parse(**kwargs):
    return PruneConfig.from_model_args({k: str(v) for k, v in kwargs.items()})


def test_defaults_and_types():
    config = parse(method="block_influence", sparsity=0.25, keep_first_last="false", calib_limit=16)
    assert config.method == "block_influence" and config.layers.sparsity == 0.25
    assert config.layers.keep_first_last is False and config.calibration.calib_limit == 16
    assert config.evaluation.batch_size == 1


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


def budget(**kwargs):
    config = parse(**kwargs)
    return layer_budget(config.layers, 8, method_scorer(config))


def test_layer_budget():
    assert budget(method="random", sparsity=0.25) == 2
    assert budget(method="random", n_remove=3) == 3
    assert budget(method="random", sparsity=0.0) == 0
    with pytest.raises(ModelArgsError, match="would remove every layer"):
        budget(method="random", n_remove=8)
    with pytest.raises(ModelArgsError, match=r"at most 6 of 8 .*keep_first_last"):
        budget(method="random", n_remove=7)
    assert budget(method="random", n_remove=7, keep_first_last=False) == 7
    with pytest.raises(ModelArgsError, match="method=spacing can remove at most 3"):
        budget(method="spacing", n_remove=4)


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


def test_an_unknown_key_close_to_a_known_one_is_suggested():
    with pytest.raises(ModelArgsError) as error:
        parse(methd="random", sparsity=0.25)
    assert str(error.value).startswith("model_args: unknown key 'methd' (did you mean 'method'?); allowed keys: ")
    with pytest.raises(ModelArgsError) as error:
        parse(method="topology", sparsity=0.25, topo_kk=5)
    assert "unknown key 'topo_kk' (did you mean 'topo_k'?)" in str(error.value)
    with pytest.raises(ModelArgsError) as error:
        parse(zzz=1)
    assert "did you mean" not in str(error.value)


def test_the_text_form_and_the_dict_form_parse_to_the_same_frozen_config():
    import dataclasses

    text = PruneConfig.from_model_args("method=topology, sparsity=0.25,topo_k=7,token_method=fastv,device=cpu")
    assert text == parse(method="topology", sparsity=0.25, topo_k=7, token_method="fastv", device="cpu")
    assert text.layers.params.topo_k == 7 and text.tokens.token_layer == 2 and text.load.device == "cpu"
    with pytest.raises(dataclasses.FrozenInstanceError):
        text.load.device = "cuda"
    moved = text.with_values(device="cuda:1")
    assert moved.load.device == "cuda:1" and text.load.device == "cpu" and moved.layers is text.layers
    with pytest.raises(ModelArgsError, match="'sparsity' is not key=value"):
        PruneConfig.from_model_args("method=random,sparsity")
    with pytest.raises(ModelArgsError, match="^model_args: sets method twice$"):
        PruneConfig.from_model_args("method=random,sparsity=0.25,method=angular")


def test_every_default_is_the_config_field_the_scorer_reads():
    from lmms_topo_plugin.scorers.registry import available_methods, get_method

    for name in available_methods()[1:]:
        spec = get_method(name)
        config = spec.parse({})
        assert config == spec.config_class()
        assert {key: param.default for key, param in spec.params.items()} == config.as_dict()
        assert spec.create(config, seed=3).config is config
