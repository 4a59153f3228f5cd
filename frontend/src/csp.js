// The page runs under a strict Content-Security-Policy (style-src 'self'): style attributes written as
// markup or with setAttribute('style', ...) are refused, styles set through CSSOM (element.style) are not.
// Cornerstone's SVG annotation labels (drawTextBox: user-select, pointer-events, the drop shadow) use
// setAttribute('style'); on SVG elements that one call is routed through CSSOM, with the same effect.
const setAttribute = SVGElement.prototype.setAttribute;
SVGElement.prototype.setAttribute = function setAttributeUnderCsp(name, value) {
  if (String(name).toLowerCase() === 'style') {
    this.style.cssText = String(value);
    return undefined;
  }
  return setAttribute.call(this, name, value);
};
