"""Linear protocols on a frozen backbone: moco's main_lincls, the multi-layer heads of mmselfsup and vissl, and
the fast heads-on-cached-features variant."""
