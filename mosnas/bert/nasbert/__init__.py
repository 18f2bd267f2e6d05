"""NAS-BERT (Xu, Tan, Luo, Song, Li, Qin, Liu; KDD 2021; arXiv 2105.14444), the third BERT search method beside
MoS and AutoDistil, at the all-MiniLM-L6-v2 scale: its op set and space (ops, space), the block-wise supernet and
the standalone encoder a picked arch exports to (model), progressive shrinking with buckets (shrink) and
lookup-table model selection (table). See the README's "NAS-BERT" section for what is scaled down or our choice."""
