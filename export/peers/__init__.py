"""Other frameworks' readers of the files we export (here: NIR files run in snnTorch)."""
