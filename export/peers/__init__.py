"""Peers that run our networks with other frameworks' code, to check our graphs spike for spike:
``lava_dl`` (the trained QAT model in lava-dl) and ``norse`` (an exported NIR graph in Norse).
They import no Lava."""
