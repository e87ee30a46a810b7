"""The many-dataset linear transfer protocol (Kornblith et al. 2019; Ericsson et al. 2021) and the fast probe grid."""
