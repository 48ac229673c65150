// Choosing a file puts its text in the document field: the form posts text, never a file.
const documentFile = document.getElementById("document-file");
if (documentFile) {
  documentFile.onchange = async () => {
    const file = documentFile.files[0];
    if (file) document.getElementById("document").value = await file.text();
  };
}
