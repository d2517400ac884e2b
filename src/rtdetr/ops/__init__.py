"""Pure tensor operations (boxes) shared by the model, the loss and the postprocessor."""
