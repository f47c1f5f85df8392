"""Peers that run our networks with other frameworks' code, to check our graphs spike for spike:
``lava_dl`` (the trained QAT model in lava-dl), ``norse`` and ``snntorch`` (an exported NIR graph
in Norse / snnTorch, built from each framework's own NIR node modules). They import no Lava."""
