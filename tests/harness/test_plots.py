"""The harness's plots from result rows (issue 14): every plot is written from hand-made rows,
layer names are readable, and the accuracy-energy plot takes the rows' energy estimates."""

import matplotlib.image

from ann2snn_zoo.harness.summary import history_label, layer_labels, plot_accuracy_vs_energy, plot_accuracy_vs_T, plot_firing_rates, plot_learn_tau, write_outputs

RATES = {"features_0_neuron": 0.1, "features_3_neuron": 0.2, "relu_1_neuron": 0.05}


def rows():
    out = [dict(cell="c", model="m5", seed=0, kind="cnn", top1=90.0)]
    for T, top1 in ((4, 80.0), (16, 89.0)):
        out.append(dict(cell=f"z{T}", model="m5", seed=0, kind="zero-shot", neuron="IF", T=T, encoder="direct", top1=top1))
        out.append(dict(cell=f"r{T}", model="m5", seed=0, kind="zero-shot", neuron="IF", T=T, encoder="rate", top1=top1 - 3))
    for flag, top1 in ((False, 88.0), (True, 89.0)):
        out.append(dict(
            cell=f"t{flag}", model="m5", seed=0, kind="retrained", neuron="LIF", T=16, encoder="direct", learn_tau=flag, tau=100.0, top1=top1,
            learned_tau=[100.0, 101.0, 99.5], firing_rates=RATES, energy_pj=50.0, cnn_energy_pj=100.0,
        ))  # fmt: skip
    out.append(dict(cell="s", model="m5", seed=0, kind="scratch", neuron="LIF", T=16, init="bn", top1=60.0))
    return out


def test_layer_labels_are_numbered_short_names():
    assert layer_labels(list(RATES)) == ["L1 features.0", "L2 features.3", "L3 relu.1"]
    fused = ["features_5_neuron_features_6_gated.neuron", "stem_2_neuron_stem_3.neuron", "relu_neuron_pool1.neuron"]
    assert layer_labels(fused) == ["L1 features.5", "L2 stem.2", "L3 relu"]  # neurons fused with a max or average pool
    assert layer_labels(["features_0_neuron_features_1_gated.neuron", "relu_1_neuron"]) == ["L1 features.0", "L2 relu.1"]  # fused with its pool


def test_history_labels_say_what_was_trained():
    assert history_label("cnn-m5-s0") == "CNN (m5, seed 0)"
    assert history_label("snn-m5-s1-rate-T16-learn_tau=0") == "converted SNN retrained, fixed tau (m5, seed 1, rate input, T=16)"
    assert history_label("something-else") == "something-else"


def test_every_plot_is_written(tmp_path):
    for plot in (plot_accuracy_vs_T, plot_learn_tau, plot_firing_rates, plot_accuracy_vs_energy):
        path = tmp_path / f"{plot.__name__}.png"
        plot(rows(), path)
        assert matplotlib.image.imread(path).shape[0] > 300


def test_plots_without_the_rows_they_need_still_write_a_file(tmp_path):
    cnn_only = rows()[:1]
    for plot in (plot_learn_tau, plot_firing_rates, plot_accuracy_vs_energy):
        plot(cnn_only, tmp_path / "p.png")
        assert (tmp_path / "p.png").is_file()


def test_write_outputs_draws_energy_and_skips_the_raster_without_checkpoints(tmp_path):
    paths = write_outputs(rows(), tmp_path, 16)
    assert paths["accuracy_vs_energy"].is_file()
    assert "spike_raster" not in paths


def test_the_table_note_says_what_its_cells_are():
    from ann2snn_zoo.harness.summary import _spread_over

    assert _spread_over(1, 1) == "one seed (no spread)"
    assert _spread_over(3, 1) == "mean ± standard deviation over 3 seeds"
    assert _spread_over(1, 6) == "mean ± standard deviation over 1 seed x 6 leave-one-speaker-out folds"
