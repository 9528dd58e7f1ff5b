"""lmms-topo-plugin: prune vision-language models inline inside lmms-eval."""
