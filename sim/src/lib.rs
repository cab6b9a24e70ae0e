//! fleetsim
