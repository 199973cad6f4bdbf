//! Load forecasting: the `Forecaster` trait, ARIMA, LSTM and baseline predictors.
