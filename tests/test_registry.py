"""The trainer registry: built-ins, a really installed third-party plugin, autoload off, broken and clashing plugins."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from conftest import REPO
from plugin_helpers import make_distribution, pip_install_target
from trl_causal.errors import RegistryError
from trl_causal.plugins import DISABLE_AUTOLOAD_ENV, PluginManager

REGISTERS_TRAINER = """
from trl_causal.hookspecs import hookimpl

@hookimpl
def register_trainers(register):
    register("{name}", trainer="{trainer}", config="trl:SFTConfig", kind="sft", description="test plugin")
"""


@pytest.fixture(scope="module")
def weighted_sft_site(tmp_path_factory):
    """The example plugin under plugins/weighted_sft, installed by pip into its own site directory."""
    return pip_install_target(REPO / "plugins" / "weighted_sft", tmp_path_factory.mktemp("site-weighted"))


def install(tmp_path, monkeypatch, dist_name, module_name, source):
    site = pip_install_target(make_distribution(tmp_path / "src", dist_name, module_name, source), tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    return site


def test_builtins_are_registered_through_the_entry_point_group():
    manager = PluginManager()
    names = {spec.name: spec for spec in manager.trainers}
    assert {"sft", "reward"} <= set(names)
    assert names["sft"].distribution == "trl-causal" and names["reward"].kind == "reward"
    from trl import RewardTrainer, SFTTrainer

    assert names["sft"].trainer_class is SFTTrainer and names["reward"].trainer_class is RewardTrainer


def test_listing_does_not_import_torch():
    code = "import sys; from trl_causal.plugins import PluginManager; PluginManager(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_installed_plugin_is_listed_with_its_distribution(weighted_sft_site, monkeypatch):
    monkeypatch.syspath_prepend(str(weighted_sft_site))
    importlib.invalidate_caches()
    spec = PluginManager().get_trainer("weighted_sft")
    assert spec.distribution == "trl-causal-weighted-sft"
    assert spec.trainer_class.__name__ == "WeightedSFTTrainer"


def test_autoload_off_keeps_builtins_and_drops_third_party(weighted_sft_site, monkeypatch):
    monkeypatch.syspath_prepend(str(weighted_sft_site))
    importlib.invalidate_caches()
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "1")
    manager = PluginManager()
    assert "weighted_sft" not in manager.trainers and "sft" in manager.trainers
    with pytest.raises(RegistryError, match=f"Third-party plugins are not loaded: {DISABLE_AUTOLOAD_ENV} is set"):
        manager.get_trainer("weighted_sft")


def test_broken_plugin_warns_with_its_distribution_and_breaks_nothing_else(tmp_path, monkeypatch):
    install(tmp_path, monkeypatch, "broken-plugin", "broken_plugin_mod", "import a_module_that_does_not_exist\n")
    with pytest.warns(UserWarning, match=r"broken-plugin.*ModuleNotFoundError.*a_module_that_does_not_exist"):
        manager = PluginManager()
    assert manager.get_trainer("sft").name == "sft"
    with pytest.raises(RegistryError, match="broken-plugin"):
        manager.get_trainer("broken_trainer")


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("from trl_causal.hookspecs import hookimpl\n@hookimpl\ndef register_trainer(register):\n    pass\n",
         r"hook 'register_trainer', which trl_causal does not define \(its hooks: register_event_estimators, register_trainers\)"),
        ("from trl_causal.hookspecs import hookimpl\n@hookimpl\ndef register_trainers(register, extra):\n    pass\n",
         r"PluginValidationError.*extra"),
        ("from trl_causal.hookspecs import hookimpl\n@hookimpl\ndef register_trainers(register):\n"
         "    register('half', trainer='trl:SFTTrainer')\n",
         r"register\('half', trainer=\.\.\.\) does not fit register\(name, trainer=\.\.\., config=.*missing a required argument: 'config'"),
        (REGISTERS_TRAINER.replace('kind="sft"', 'kind="dpo"').format(name="half", trainer="trl:SFTTrainer"),
         r"register_trainers: RegistryError: .*kind 'dpo'"),
        (REGISTERS_TRAINER.replace("@hookimpl\n", "").format(name="half", trainer="trl:SFTTrainer"),
         r"implements no trl_causal hook: mark .* with @trl_causal.hookspecs.hookimpl"),
        (REGISTERS_TRAINER.replace("from trl_causal.hookspecs import hookimpl", "import pluggy\nhookimpl = pluggy.HookimplMarker('trl-causal')")
         .format(name="half", trainer="trl:SFTTrainer"),
         r"implements no trl_causal hook"),
    ],
    ids=["unknown-hook", "bad-signature", "register-without-config", "unknown-kind", "no-hookimpl-marker", "other-project-marker"],
)
def test_plugin_with_a_broken_hook_warns_and_breaks_nothing_else(request, tmp_path, monkeypatch, source, problem):
    module = "half_plugin_" + request.node.callspec.id.replace("-", "_")  # one module per case: imports are cached
    install(tmp_path, monkeypatch, "half-plugin", module, source)
    with pytest.warns(UserWarning, match=rf"(?s)'{module}' from distribution 'half-plugin' failed to load: .*{problem}"):
        manager = PluginManager()
    assert {"sft", "capt"} <= {spec.name for spec in manager.trainers} and "half" not in manager.trainers
    with pytest.raises(RegistryError, match="half-plugin"):
        manager.get_trainer("half")


def test_two_providers_of_one_name_make_it_unselectable_and_leave_the_rest_working(tmp_path, monkeypatch):
    install(tmp_path, monkeypatch, "clash-plugin", "clash_plugin_mod", REGISTERS_TRAINER.format(name="sft", trainer="trl:SFTTrainer"))
    with pytest.warns(UserWarning, match=r"'trl-causal' and 'clash-plugin' both register the trainer 'sft'.*Uninstall 'clash-plugin'"):
        manager = PluginManager()
    assert "sft" not in manager.trainers and manager.get_trainer("capt").name == "capt"
    with pytest.raises(RegistryError, match=r"'trl-causal' and 'clash-plugin' both register the trainer 'sft'"):
        manager.get_trainer("sft")


def test_a_name_one_plugin_registers_twice_is_told_as_such(tmp_path, monkeypatch):
    source = REGISTERS_TRAINER.format(name="dup", trainer="trl:SFTTrainer")
    source += '    register("dup", trainer="trl:SFTTrainer", config="trl:SFTConfig")\n'
    install(tmp_path, monkeypatch, "dup-plugin", "dup_plugin_mod", source)
    with pytest.warns(UserWarning, match=r"Distribution 'dup-plugin' registers the trainer 'dup' twice"):
        manager = PluginManager()
    with pytest.raises(RegistryError, match="registers the trainer 'dup' twice"):
        manager.get_trainer("dup")


def test_an_entry_point_named_like_another_distributions_is_loaded_too(tmp_path, monkeypatch):
    # a third-party entry point named "builtin" once hid every built-in trainer (the name was taken as loaded)
    install(tmp_path, monkeypatch, "namesake-plugin", "builtin", REGISTERS_TRAINER.format(name="namesake", trainer="trl:SFTTrainer"))
    manager = PluginManager()
    assert {"namesake", "sft", "capt", "latent_shift"} <= {spec.name for spec in manager.trainers}
    assert manager.get_trainer("namesake").distribution == "namesake-plugin"


def test_registering_a_class_that_is_not_a_trainer_fails_when_selected(tmp_path, monkeypatch):
    install(tmp_path, monkeypatch, "odd-plugin", "odd_plugin_mod", REGISTERS_TRAINER.format(name="odd", trainer="collections:OrderedDict"))
    manager = PluginManager()
    assert "odd" in manager.trainers  # listing works
    with pytest.raises(RegistryError, match=r"'odd'.*'odd-plugin'.*not a subclass of transformers.Trainer"):
        manager.get_trainer("odd").trainer_class


def test_unknown_trainer_suggests_close_names():
    with pytest.raises(RegistryError, match=r"Unknown trainer 'sfft'\. Did you mean 'sft'"):
        PluginManager().get_trainer("sfft")
    with pytest.raises(RegistryError, match=r"Unknown trainer 'CAPT'\. Did you mean 'capt'"):
        PluginManager().get_trainer("CAPT")


REGISTERS_ESTIMATORS = """
from trl_causal.capt import EventEstimator, TermMatcher, template_from_matcher
from trl_causal.hookspecs import hookimpl


class WordList(EventEstimator):  # written from the hookspec: no `name` attribute
    def __init__(self, words=("cat",)):
        self.matcher = TermMatcher(list(words))

    def estimate(self, prompt, completion=None, *, row=None):
        return template_from_matcher(prompt, completion, self.matcher)


@hookimpl
def register_event_estimators(register):
    register("wordlist", estimator="estimator_plugin_mod:WordList", description="events from a word list")
    register("notone", estimator="collections:OrderedDict")
"""


def test_an_estimator_plugin_without_a_name_attribute_is_named_as_registered(tmp_path, monkeypatch):
    import datasets

    from conftest import cpu_training_args
    from trl_causal import plugins
    from trl_causal.capt.events import NoEventsFound
    from trl_causal.trainer.capt_config import CAPTConfig
    from trl_causal.capt.sft_rows import estimate_dataset

    install(tmp_path, monkeypatch, "estimator-plugin", "estimator_plugin_mod", REGISTERS_ESTIMATORS)
    monkeypatch.setattr(plugins, "_manager", PluginManager())
    args = CAPTConfig(**cpu_training_args(tmp_path), event_estimator="wordlist", event_estimator_kwargs={"words": ["dog"]})
    rows = datasets.Dataset.from_list([{"prompt": "Is the dog happy?", "completion": " The dog is."}])
    estimated = estimate_dataset(args.build_event_estimator(), rows)  # read estimator.name for every row
    assert estimated.templates[0].names == {"e1": "dog"}
    with pytest.raises(NoEventsFound, match="'wordlist' estimator"):
        estimate_dataset(args.build_event_estimator(), rows.map(lambda row: {"prompt": "No pets."}), on_no_events="drop")
    with pytest.raises(RegistryError, match=r"'notone' \(from distribution 'estimator-plugin'\) registers estimator <class 'collections.OrderedDict'>, "
                       r"which is not a subclass of trl_causal.capt.EventEstimator"):
        CAPTConfig(**cpu_training_args(tmp_path), event_estimator="notone")


@pytest.mark.parametrize("name", ["capt", "deconfounded_reward", "latent_shift"])
def test_each_causal_trainer_names_its_method_in_the_model_card(name):
    """TRL's model card says "trained with {_name}": latent_shift inherited SFTTrainer's "SFT"."""
    from trl import RewardTrainer, SFTTrainer

    trainer_class = PluginManager(autoload=False).get_trainer(name).trainer_class
    assert trainer_class._name not in (SFTTrainer._name, RewardTrainer._name)
