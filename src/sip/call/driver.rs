//! The call's driver: one task per call owns the machine and the rsipstack dialogs and
//! transactions by the machine's ids.
